package fakeupstream

import (
	"net/http"
	"strings"
)

// CameraManager's endpoints.
//
//nolint:gosec // G101: endpoint names (method and path), not credentials.
const (
	// EndpointCameraManagerToken is CameraManager's token endpoint: the
	// password and refresh_token grants with the API key as raw HTTP Basic,
	// parameters in the query string or the form.
	EndpointCameraManagerToken Endpoint = "POST /oauth/token"
	// EndpointCameraManagerLogout deletes the bearer token and its refresh
	// token.
	EndpointCameraManagerLogout Endpoint = "DELETE /rest/v2.0/users/self/tokens/current"
)

var cameraManager = vendor{
	routes: []route{
		{(*Server).handleCameraManagerToken, []Endpoint{EndpointCameraManagerToken}},
		{(*Server).handleCameraManagerLogout, []Endpoint{EndpointCameraManagerLogout}},
	},
	pluginConfigs: map[string]func(*Server) map[string]any{
		"cameramanager": (*Server).cameraManagerPluginConfig,
	},
}

// CameraManagerTokenURL is CameraManager's token endpoint.
func (s *Server) CameraManagerTokenURL() string { return s.endpointURL(EndpointCameraManagerToken) }

// CameraManagerLogoutURL is CameraManager's logout endpoint.
func (s *Server) CameraManagerLogoutURL() string { return s.endpointURL(EndpointCameraManagerLogout) }

// cameraManagerPluginConfig gives the API key as the client credentials
// and the user for the password grant.
func (s *Server) cameraManagerPluginConfig() map[string]any {
	return map[string]any{
		"provider":       "cameramanager",
		"token_url":      s.CameraManagerTokenURL(),
		"revocation_url": s.CameraManagerLogoutURL(),
		"ca_cert":        s.CACertPEM(),
		"client_id":      s.creds.CameraManagerKeyID,
		"client_secret":  s.creds.CameraManagerKeySecret,
		"username":       s.creds.Username,
		"password":       s.creds.Password,
	}
}

// RefreshTokenLive reports whether a CameraManager refresh token works.
func (s *Server) RefreshTokenLive(rt string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshTokens[rt]
}

// ForgetRefreshTokens makes every refresh token stop working, as a
// server that lost its sessions would.
func (s *Server) ForgetRefreshTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refreshTokens = map[string]bool{}
}

// handleCameraManagerToken is CameraManager's POST /oauth/token: the
// password and refresh_token grants, parameters in the query string (as
// the page shows) or the form, the API key as raw HTTP Basic.
func (s *Server) handleCameraManagerToken(_ Endpoint, w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "the form does not parse")
		return
	}
	params := r.Form                // query string and form body together
	id, secret, ok := r.BasicAuth() // raw, as for Metapack
	if !ok || !equal(id, s.creds.CameraManagerKeyID) || !equal(secret, s.creds.CameraManagerKeySecret) {
		s.writeClientError(w, true)
		return
	}
	scope := params.Get("scope")
	if scope == "" {
		scope = "write"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recordLocked(EndpointCameraManagerToken, params)
	var refresh string
	switch params.Get("grant_type") {
	case "password":
		if !equal(params.Get("username"), s.creds.Username) || !equal(params.Get("password"), s.creds.Password) {
			writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "Bad credentials")
			return
		}
		refresh = randomString("", 36)
		s.refreshTokens[refresh] = true
		s.everRefresh = append(s.everRefresh, refresh)
	case "refresh_token":
		refresh = params.Get("refresh_token")
		if !s.refreshTokens[refresh] {
			writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "Invalid refresh token")
			return
		}
	default:
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
		return
	}
	token, expiresIn := s.issueLocked(refresh)
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token":  token,
		"token_type":    "bearer",
		"refresh_token": refresh,
		"expires_in":    expiresIn,
		"scope":         scope,
	})
}

// handleCameraManagerLogout deletes the bearer token and its refresh token.
func (s *Server) handleCameraManagerLogout(_ Endpoint, w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	defer s.mu.Unlock()
	t, live := s.liveTokenLocked(token)
	if !ok || !live {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
		return
	}
	delete(s.tokens, token)
	delete(s.refreshTokens, t.refreshToken)
	w.WriteHeader(http.StatusOK)
}
