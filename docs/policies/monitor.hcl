# monitor: the narrow token a monitoring system polls with. Reads the counters
# and the credential check, nothing else. verify makes one upstream login per
# read: poll it every few minutes, status as often as you like.
# Replace "mapsindoors" with the mount path.
path "mapsindoors/status" {
  capabilities = ["read"]
}

path "mapsindoors/verify" {
  capabilities = ["read"]
}
