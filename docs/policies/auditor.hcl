# auditor: sees how the mount is set up and used, changes nothing and gets no
# token. Reads the config (never a secret: those are write-only), the roles,
# verify, status and the upstream's list of client secrets, and hashes a value
# to find it in the audit log. It cannot read creds, write or delete the
# config or roles, or rotate.
# Replace "mapsindoors" with the mount path and "file" with the audit device.
path "mapsindoors/config" {
  capabilities = ["read"]
}

path "mapsindoors/roles/*" {
  capabilities = ["read", "list"]
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

path "mapsindoors/client-secrets/pending" {
  capabilities = ["read"]
}

path "sys/audit-hash/file" {
  capabilities = ["update"]
}
