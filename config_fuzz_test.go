package mapsindoors

import (
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// Defect 6: a server that omits expires_in (RFC 6749 §5.1 allows it)
// could not be used at all; default_token_lifetime says how long its
// tokens live.
func TestConfig_DefaultTokenLifetime(t *testing.T) {
	t.Run("bounds", func(t *testing.T) {
		cases := []struct {
			value   any
			wantErr bool
			want    int64
		}{
			{"0", false, 0},
			{"10s", false, 10},
			{"1h", false, 3600},
			{"24h", false, 86400},
			{"9s", true, 0},
			{"25h", true, 0},
			{"-1s", true, 0},
			{"soon", true, 0},
		}
		for _, tc := range cases {
			t.Run(tc.value.(string), func(t *testing.T) {
				e := newTestEnv(t, fakeupstream.Options{})
				e.configure(t, nil)
				resp, err := e.write(t, "config", map[string]any{"default_token_lifetime": tc.value})
				if tc.wantErr {
					requireBadRequest(t, resp, err, "default_token_lifetime")
					return
				}
				require.NoError(t, err)
				require.False(t, resp != nil && resp.IsError(), "config write: %v", resp)
				require.Equal(t, tc.want, e.read(t, "config").Data["default_token_lifetime"])
			})
		}
	})

	t.Run("a server that omits expires_in", func(t *testing.T) {
		e := newTestEnv(t, fakeupstream.Options{})
		e.configure(t, map[string]any{"default_token_lifetime": "1h"})
		e.role(t, "app", nil)
		noExpiresIn := fakeupstream.Fault{Body: `{"access_token":"abc","token_type":"Bearer"}`}

		e.fake.InjectFault(fakeupstream.EndpointToken, noExpiresIn)
		resp := e.read(t, "creds/app")
		require.Equal(t, "abc", resp.Data["access_token"])
		require.InDelta(t, time.Hour.Seconds(), float64(resp.Data["expires_in"].(int64)), 1)
		require.LessOrEqual(t, resp.Secret.TTL, time.Hour-time.Minute, "the lease keeps its margin")

		// Without it, the answer is refused with what to set.
		e.writeConfig(t, map[string]any{"default_token_lifetime": 0})
		e.fake.InjectFault(fakeupstream.EndpointToken, noExpiresIn)
		_, err := e.do(t, logical.ReadOperation, "creds/app", nil)
		requireCoded(t, err, http.StatusBadGateway, "default_token_lifetime")
	})
}
