// Command fakeupstream runs the fake token services (MapsIndoors, Metapack,
// CameraManager) on loopback, for the demo and for trying the plugin by
// hand. It writes into -dir its CA certificate, the credentials it accepts
// and, per plugin provider, a config to write to a mount, then serves until
// interrupted.
package main

import (
	"encoding/json"
	"errors"
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
	dir := flag.String("dir", ".", "directory to write ca.pem, config-<provider>.json and fake.env into")
	lifetime := flag.Duration("token-lifetime", time.Hour, "expires_in of issued tokens")
	flag.Parse()
	if err := run(*addr, *dir, *lifetime); err != nil {
		fmt.Fprintln(os.Stderr, "fakeupstream:", err)
		os.Exit(1)
	}
}

// run serves until interrupted; the server is closed however it ends.
func run(addr, dir string, lifetime time.Duration) error {
	srv, err := fakeupstream.Start(fakeupstream.Options{Addr: addr, TokenLifetime: lifetime})
	if err != nil {
		return err
	}
	defer srv.Close()
	if err := writeFiles(srv, dir); err != nil {
		return err
	}
	fmt.Printf("fakeupstream: serving %s (CA in %s)\n", srv.URL(), filepath.Join(dir, "ca.pem"))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
	return nil
}

// configFile is where writeFiles leaves the config for one provider, ready
// for `vault write MOUNT/config @config-<provider>.json`.
func configFile(provider string) string { return "config-" + provider + ".json" }

// writeFiles leaves what a client needs: the CA to trust, a plugin config
// per provider, and, as shell variables, the URLs and the credentials this
// fake made up. Every file appears whole (written aside, then renamed), and
// fake.env comes last, so a script that waits for it finds the rest.
func writeFiles(srv *fakeupstream.Server, dir string) error {
	if err := writeFileWhole(dir, "ca.pem", []byte(srv.CACertPEM()), 0o644); err != nil {
		return err
	}
	for _, provider := range fakeupstream.Providers() {
		config, err := json.MarshalIndent(srv.PluginConfig(provider), "", "  ")
		if err != nil {
			return fmt.Errorf("encode the %s config: %w", provider, err)
		}
		if err := writeFileWhole(dir, configFile(provider), append(config, '\n'), 0o600); err != nil {
			return err
		}
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
	return writeFileWhole(dir, "fake.env", []byte(env), 0o600)
}

// writeFileWhole writes aside and renames into place, so a reader never
// sees half a file. The file aside starts out 0600, so a secret in it is not
// readable by others on the way.
func writeFileWhole(dir, name string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(dir, "."+name+".*")
	if err != nil {
		return err
	}
	// Removing it is a no-op once it was renamed; before that, a failure
	// to remove it leaves a 0600 file in the fake's own directory.
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := tmp.Chmod(mode); err != nil {
		return errors.Join(err, tmp.Close())
	}
	if _, err := tmp.Write(data); err != nil {
		return errors.Join(err, tmp.Close())
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, name))
}
