# app: an application (or the Vault Agent / Vault Secrets Operator acting for
# it) reads tokens for its own role, and nothing else. It cannot read the
# config, other roles' tokens, verify, status or the client-secrets list.
# Replace "mapsindoors" with the mount path and "app" with the role.
path "mapsindoors/creds/app" {
  capabilities = ["read"]
}
