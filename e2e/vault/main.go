// Command vault is the pinned Vault server the end-to-end tests and the demo
// run. It is built from the Go module proxy because no vault binary can be
// downloaded here; scripts/vault.sh builds it with Vault's "minimal" build
// tag and says where the binary is cached.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
