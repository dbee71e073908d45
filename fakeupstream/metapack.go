package fakeupstream

import "net/http"

// EndpointMetapackToken is Metapack's token endpoint: client credentials
// with the API key as raw HTTP Basic.
const EndpointMetapackToken Endpoint = "POST /oauth" //nolint:gosec // G101: an endpoint name, not a credential.

var metapack = vendor{
	routes: []route{
		{(*Server).handleMetapackToken, []Endpoint{EndpointMetapackToken}},
	},
	pluginConfigs: map[string]func(*Server) map[string]any{
		"metapack": (*Server).metapackPluginConfig,
	},
}

// MetapackTokenURL is Metapack's token endpoint.
func (s *Server) MetapackTokenURL() string { return s.endpointURL(EndpointMetapackToken) }

// metapackPluginConfig hands over the API key the way Metapack does: as
// the text of an apiKey.properties file.
func (s *Server) metapackPluginConfig() map[string]any {
	return map[string]any{
		"provider":           "metapack",
		"token_url":          s.MetapackTokenURL(),
		"ca_cert":            s.CACertPEM(),
		"api_key_properties": "apiKey.id = " + s.creds.MetapackKeyID + "\napiKey.secret = " + s.creds.MetapackKeySecret + "\n",
	}
}

// handleMetapackToken is Metapack's POST /oauth: grant_type
// client_credentials in the form, the API key as raw HTTP Basic.
func (s *Server) handleMetapackToken(_ Endpoint, w http.ResponseWriter, r *http.Request) {
	if !formPost(w, r) {
		return
	}
	if r.PostForm.Get("grant_type") != "client_credentials" {
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
		return
	}
	// The API key as Metapack takes it: base64 of the raw "id:secret",
	// not form-decoded as RFC 6749 would have it.
	id, secret, ok := r.BasicAuth()
	if !ok || !equal(id, s.creds.MetapackKeyID) || !equal(secret, s.creds.MetapackKeySecret) {
		s.writeClientError(w, true)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recordLocked(EndpointMetapackToken, r.PostForm)
	// A JWT-shaped token and a scope with a trailing space, as on the page.
	token, expiresIn := s.issueLocked("")
	jwt := "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9." + token
	s.tokens[jwt] = s.tokens[token]
	delete(s.tokens, token)
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": jwt,
		"expires_in":   expiresIn,
		"scope":        "can-create-locations can-delete-own-locations ",
		"token_type":   "bearer",
	})
}
