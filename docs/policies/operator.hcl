# operator: runs the mount. Writes the config and the roles, rotates the root
# secret, checks the stored credential, reads the counters, lists the
# upstream's client secrets and revokes the mount's leases (to tear it down).
# It cannot read tokens (creds): an operator who needs one is also an app.
# Writing the config cannot send the stored secret elsewhere (a move of an
# endpoint needs the secret again; see docs/threat-model.md), but deleting it
# stops the mount: drop "delete" for people who should only change settings.
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

# Replaced secrets still in their grace: list them, or delete them now
# (before disabling the mount, say).
path "mapsindoors/client-secrets/pending" {
  capabilities = ["read", "update"]
}

# Replace a role's shared token now (a token leaked into a log, say).
path "mapsindoors/rotate-role/*" {
  capabilities = ["update"]
}

# `vault lease revoke -prefix mapsindoors/creds/` (every lease of the mount)
# and `-prefix mapsindoors/creds/<role>/` (one role's).
path "sys/leases/revoke-prefix/mapsindoors/creds" {
  capabilities = ["update", "sudo"]
}

path "sys/leases/revoke-prefix/mapsindoors/creds/*" {
  capabilities = ["update", "sudo"]
}
