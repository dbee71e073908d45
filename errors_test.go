package mapsindoors

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

func TestErrorResponse_EachKindGetsItsStatus(t *testing.T) {
	cases := []struct {
		name     string
		err      error
		status   int
		mentions string
	}{
		{"what the caller can fix", userErrorf("write %s", "x"), http.StatusBadRequest, "write x"},
		{"wrapped user error", fmt.Errorf("ctx: %w", userErrorf("fix it")), http.StatusBadRequest, "fix it"},
		{"refused client", &upstream.Error{Op: "token request", StatusCode: 401, Code: "invalid_client"}, http.StatusBadGateway,
			"check client_id and client_secret"},
		{"upstream down", &upstream.Error{Op: "token request", StatusCode: 503}, http.StatusBadGateway, "HTTP 503"},
		{"storage", fmt.Errorf("store config: %w", errors.New("disk full")), http.StatusInternalServerError, "store config: disk full"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := errorResponse(tc.err)
			switch tc.status {
			case http.StatusBadRequest:
				requireBadRequest(t, resp, err, tc.mentions)
			case http.StatusBadGateway:
				require.Nil(t, resp)
				requireCoded(t, err, tc.status, tc.mentions)
			default:
				require.Nil(t, resp)
				var coded logical.HTTPCodedError
				require.False(t, errors.As(err, &coded), "a plain error, which Vault answers with a 500")
				require.Equal(t, tc.err, err)
			}
		})
	}
}

// A storage failure during rotate-root is Vault's, not the upstream's.
func TestRotateRoot_StorageFailureIsNotReportedAsUpstream(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.storage = &failingStorage{Storage: e.storage, failPut: func(k string) bool { return k == configStoragePath }}
	_, err := e.rotate(t)
	require.ErrorContains(t, err, "store config: storage is down")
	require.NotContains(t, err.Error(), "upstream")
	var coded logical.HTTPCodedError
	require.False(t, errors.As(err, &coded), "not a 502")
}
