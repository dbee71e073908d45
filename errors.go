package mapsindoors

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// userError is a refusal the caller can fix; Vault answers it with a 400.
// Its message says what to do next and never holds a secret.
type userError struct{ msg string }

func (e userError) Error() string { return e.msg }

func userErrorf(format string, args ...any) error {
	return userError{fmt.Sprintf(format, args...)}
}

// errNoConfig is what every path that needs the config says without one.
func errNoConfig(mount string) error {
	return userErrorf("this mount has no config; write %sconfig with the client credentials first", mount)
}

// errorResponse is how a handler answers an error: a 400 for what the
// caller can fix, a 502 naming the upstream's status and OAuth2 error for a
// failed upstream exchange, and the error as it is (a 500) for the rest,
// storage failures among them.
func errorResponse(err error) (*logical.Response, error) {
	var ue userError
	if errors.As(err, &ue) {
		return logical.ErrorResponse(ue.msg), nil
	}
	var upErr *upstream.Error
	if errors.As(err, &upErr) {
		msg := err.Error()
		// With private_key_jwt the upstream names the key, aud and alg
		// to check instead (upstream/assertion.go).
		if upstream.IsInvalidClient(err) && upErr.Hint == "" {
			msg += "; check client_id and client_secret in config"
		}
		return nil, logical.CodedError(http.StatusBadGateway, msg)
	}
	return nil, err
}
