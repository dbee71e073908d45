// Command fakeupstream runs the fake MapsIndoors token service on loopback,
// for the demo and for trying the plugin by hand. It writes its CA
// certificate and the credentials it accepts into -dir, then serves until
// interrupted.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on (loopback only)")
	dir := flag.String("dir", ".", "directory to write ca.pem and fake.env into")
	lifetime := flag.Duration("token-lifetime", time.Hour, "expires_in of issued tokens")
	flag.Parse()

	srv, err := fakeupstream.Start(fakeupstream.Options{Addr: *addr, TokenLifetime: *lifetime})
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakeupstream:", err)
		os.Exit(1)
	}
	defer srv.Close()
	if err := writeFiles(srv, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "fakeupstream:", err)
		os.Exit(1)
	}
	fmt.Printf("fakeupstream: serving %s (CA in %s)\n", srv.URL(), filepath.Join(*dir, "ca.pem"))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
}

// writeFiles leaves what a client needs: the CA to trust and, as shell
// variables, the URLs and the credentials this fake made up.
func writeFiles(srv *fakeupstream.Server, dir string) error {
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), []byte(srv.CACertPEM()), 0o644); err != nil {
		return err
	}
	c := srv.Credentials()
	env := fmt.Sprintf(`FAKE_URL=%q
FAKE_TOKEN_URL=%q
FAKE_ROTATION_URL=%q
FAKE_CLIENT_ID=%q
FAKE_CLIENT_SECRET=%q
FAKE_CLIENT_SECRET_ID=%q
FAKE_CUSTOMER_ID=%q
FAKE_USERNAME=%q
FAKE_PASSWORD=%q
`, srv.URL(), srv.TokenURL(), srv.RotationURL(),
		c.ClientID, c.ClientSecret, c.ClientSecretID, c.CustomerID, c.Username, c.Password)
	return os.WriteFile(filepath.Join(dir, "fake.env"), []byte(env), 0o600)
}
