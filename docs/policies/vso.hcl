# vso: what Vault Secrets Operator's VaultAuth role needs for a
# VaultDynamicSecret of the "app" role with revoke: true. Reading creds as an
# app does, and revoking the lease it replaces or leaves behind.
# Replace "mapsindoors" with the mount path and "app" with the role.
path "mapsindoors/creds/app" {
  capabilities = ["read"]
}

# A VaultDynamicSecret with allowStaticCreds: true reads the shared token
# without a lease instead.
path "mapsindoors/static-creds/app" {
  capabilities = ["read"]
}

path "sys/leases/revoke" {
  capabilities = ["update"]
}
