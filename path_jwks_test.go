package mapsindoors

import (
	"encoding/json"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
)

// The attacks of an anonymous caller, whose only path is jwks (readable
// without a Vault token): it gets the public halves of the keys the mount
// signs with now or soon, or did until their grace ends, and nothing else.
func TestAttackAnonymous_JWKSCarriesNoPrivateMemberOfAnyKeyType(t *testing.T) {
	for _, kt := range keyTypes {
		t.Run(kt.name, func(t *testing.T) {
			e := newJWTEnv(t, map[string]any{"key_type": kt.name, "previous_secret_grace": "1h"})
			e.useJWKSURI(t, kt.alg)
			_, err := e.rotate(t) // a previous key of the default type, and the current one of kt
			require.NoError(t, err)
			_, err = e.rotate(t)
			require.NoError(t, err)

			body, set := e.jwks(t)
			require.Equal(t, 3, len(set.Keys))
			var doc struct {
				Keys []map[string]any `json:"keys"`
			}
			require.NoError(t, json.Unmarshal(body, &doc))
			for _, k := range doc.Keys {
				for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"} {
					requireNoKey(t, k, private, "key %v carries a private member", k["kid"])
				}
				require.Equal(t, "sig", k["use"])
			}
			// assertNoPrivateKeys (newJWTEnv's cleanup) checks every
			// encoding of every private key against the responses.
		})
	}
}

func TestAttackAnonymous_JWKSCannotBeWrittenOrDeleted(t *testing.T) {
	e := newJWTEnv(t, nil)
	_, before := e.jwks(t)
	for _, op := range []logical.Operation{logical.CreateOperation, logical.UpdateOperation, logical.DeleteOperation} {
		_, err := e.do(t, op, "jwks", map[string]any{"keys": "[]"})
		require.ErrorIs(t, err, logical.ErrUnsupportedOperation, "%s", op)
	}
	_, after := e.jwks(t)
	require.Equal(t, kidsOf(before), kidsOf(after))
}
