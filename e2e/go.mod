module github.com/mapsindoors/vault-plugin-secrets-mapsindoors/e2e

go 1.26.8

require (
	github.com/mapsindoors/vault-plugin-secrets-mapsindoors v0.0.0
	github.com/stretchr/testify v1.12.1
)

require go.yaml.in/yaml/v3 v3.0.5 // indirect

replace github.com/mapsindoors/vault-plugin-secrets-mapsindoors => ../
