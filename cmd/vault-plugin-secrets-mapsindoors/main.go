// Command vault-plugin-secrets-mapsindoors is the plugin process Vault
// starts. It serves every mount of the plugin from one process.
package main

import (
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/plugin"

	mapsindoors "github.com/mapsindoors/vault-plugin-secrets-mapsindoors"
)

func main() {
	// Never print to stdout: it carries the plugin handshake.
	logger := hclog.New(&hclog.LoggerOptions{Output: os.Stderr, JSONFormat: true})
	if err := plugin.ServeMultiplex(&plugin.ServeOpts{
		BackendFactoryFunc: mapsindoors.Factory,
		Logger:             logger,
	}); err != nil {
		logger.Error("plugin shut down", "error", err)
		os.Exit(1)
	}
}
