// Command vault is Vault v1.19.5, one server of the compatibility matrix
// (make compat). It is built from the Go module proxy, like the pinned
// server in ../vault; scripts/vault.sh builds it with Vault's "minimal"
// build tag and says where the binary is cached.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
