// Command oauthserver is an OAuth2 authorization server for the end-to-end
// suite, built on Ory fosite rather than on the project's own fake, so the
// plugin is checked against an independent implementation of RFC 6749's
// client_credentials grant, RFC 7523 private_key_jwt client authentication,
// RFC 7009 revocation and RFC 7662 introspection.
//
// It listens on loopback only, over TLS with a CA it makes at start (written
// to -ca-out for the plugin's ca_cert), registers the clients of -clients,
// and writes -ready-file once it accepts connections. It runs until SIGINT or
// SIGTERM. See the README beside this file for the file formats.
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); errors.Is(err, flag.ErrHelp) {
		return
	} else if err != nil {
		fmt.Fprintln(os.Stderr, "oauthserver:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("oauthserver", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "loopback `host:port` to listen on (port 0 picks a free port)")
	clients := fs.String("clients", "", "JSON `file` of clients to register (optional; the admin endpoint adds more)")
	caOut := fs.String("ca-out", "", "`file` to write the throwaway CA certificate (PEM) to")
	ready := fs.String("ready-file", "", "`file` to write the ready JSON to once listening")
	lifetime := fs.Duration("token-lifetime", time.Minute, "access-token lifetime")
	jwksCA := fs.String("jwks-ca", "", "PEM `file` of CA certificates trusted for https jwks_uri (default: system roots)")
	jwksTTL := fs.Duration("jwks-cache-ttl", time.Hour, "how long a fetched JWKS is cached (an unknown kid refetches sooner)")
	issuerAud := fs.Bool("accept-issuer-audience", false, "also accept the issuer (base URL) as a client assertion's aud")
	cost := fs.Int("bcrypt-cost", 4, "bcrypt cost of the stored client-secret hashes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	opts := Options{
		Addr:                 *addr,
		TokenLifetime:        *lifetime,
		JWKSCacheTTL:         *jwksTTL,
		AcceptIssuerAudience: *issuerAud,
		BcryptCost:           *cost,
		CAFile:               *caOut,
		ReadyFile:            *ready,
	}
	if *clients != "" {
		cs, err := readClientsFile(*clients)
		if err != nil {
			return err
		}
		opts.Clients = cs
	}
	if *jwksCA != "" {
		pem, err := os.ReadFile(*jwksCA)
		if err != nil {
			return err
		}
		opts.JWKSRoots = x509.NewCertPool()
		if !opts.JWKSRoots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("-jwks-ca %s: no PEM certificate in it", *jwksCA)
		}
	}

	s, err := Start(opts)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	select {
	case got := <-sig:
		s.log.Printf("%s: shutting down", got)
	case <-s.Done():
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Shutdown(ctx)
}
