# app: an application (or the Vault Agent / Vault Secrets Operator acting for
# it) reads tokens for its own role, and nothing else. It cannot read the
# config, other roles' tokens, verify, status or the client-secrets list, nor
# replace the role's shared token (rotate-role).
# Replace "mapsindoors" with the mount path and "app" with the role.
path "mapsindoors/creds/app" {
  capabilities = ["read"]
}

# The same shared token without a Vault lease (see README: static-creds or
# creds). Drop this block if the app must read leased tokens only.
path "mapsindoors/static-creds/app" {
  capabilities = ["read"]
}
