# operator: runs the mount. Writes the config and the roles, rotates the root
# secret, checks the stored credential, reads the counters, lists the
# upstream's client secrets and revokes the mount's leases (to tear it down).
# It cannot read tokens (creds): an operator who needs one is also an app.
# Writing the config lets an operator point token_url elsewhere, and with it
# send the stored secret there; give this policy to people you would trust
# with the client secret itself.
# Replace "mapsindoors" with the mount path.
path "mapsindoors/config" {
  capabilities = ["create", "read", "update", "delete"]
}

path "mapsindoors/roles/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

path "mapsindoors/rotate-root" {
  capabilities = ["update"]
}

path "mapsindoors/verify" {
  capabilities = ["read"]
}

path "mapsindoors/status" {
  capabilities = ["read"]
}

path "mapsindoors/client-secrets" {
  capabilities = ["read", "list"]
}

path "mapsindoors/client-secrets/" {
  capabilities = ["list"]
}

# `vault lease revoke -prefix mapsindoors/creds/` (every lease of the mount)
# and `-prefix mapsindoors/creds/<role>/` (one role's).
path "sys/leases/revoke-prefix/mapsindoors/creds" {
  capabilities = ["update", "sudo"]
}

path "sys/leases/revoke-prefix/mapsindoors/creds/*" {
  capabilities = ["update", "sudo"]
}
