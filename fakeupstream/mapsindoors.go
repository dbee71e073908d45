package fakeupstream

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// MapsIndoors' endpoints: the IdentityServer-style token endpoint and the
// clientcredentials API that manages the client's secrets.
//
//nolint:gosec // G101: endpoint names (method and path), not credentials.
const (
	EndpointToken        Endpoint = "POST /connect/token"
	EndpointListSecrets  Endpoint = "GET /api/clientcredentials"
	EndpointCreateSecret Endpoint = "POST /api/clientcredentials"
	EndpointDeleteSecret Endpoint = "DELETE /api/clientcredentials"
)

// PasswordClientID is the client id MapsIndoors' password grant uses.
const PasswordClientID = "client"

var mapsIndoors = vendor{
	routes: []route{
		{(*Server).handleMapsIndoorsToken, []Endpoint{EndpointToken}},
		{(*Server).handleClientCredentials, []Endpoint{EndpointListSecrets, EndpointCreateSecret, EndpointDeleteSecret}},
	},
	pluginConfigs: map[string]func(*Server) map[string]any{
		"mapsindoors": (*Server).mapsIndoorsPluginConfig,
		// The plugin's generic RFC 6749 provider, served by the MapsIndoors
		// token endpoint, which takes any standard client authentication.
		"oauth2": (*Server).oauth2PluginConfig,
	},
}

type clientSecret struct {
	id          string
	description string
	createdAt   time.Time
	value       string
}

// TokenURL is the MapsIndoors token endpoint.
func (s *Server) TokenURL() string { return s.endpointURL(EndpointToken) }

// RotationURL is the clientcredentials API.
func (s *Server) RotationURL() string { return s.endpointURL(EndpointListSecrets) }

func (s *Server) mapsIndoorsPluginConfig() map[string]any {
	return map[string]any{
		"provider":         "mapsindoors",
		"client_id":        s.creds.ClientID,
		"client_secret":    s.creds.ClientSecret,
		"client_secret_id": s.creds.ClientSecretID,
		"customer_id":      s.creds.CustomerID,
		"token_url":        s.TokenURL(),
		"rotation_url":     s.RotationURL(),
		"ca_cert":          s.CACertPEM(),
	}
}

// oauth2PluginConfig names token_auth_method rather than leaving it to the
// provider's default, so a test that checks how the secret was sent does
// not depend on that default.
func (s *Server) oauth2PluginConfig() map[string]any {
	return map[string]any{
		"provider":          "oauth2",
		"client_id":         s.creds.ClientID,
		"client_secret":     s.creds.ClientSecret,
		"token_url":         s.TokenURL(),
		"token_auth_method": "client_secret_basic",
		"ca_cert":           s.CACertPEM(),
	}
}

// SecretInfo is a client secret as the GET of the clientcredentials API
// shows it.
type SecretInfo struct {
	ID          string    `json:"id"`
	Description string    `json:"description"`
	ClientID    string    `json:"client_id"`
	CreatedAt   time.Time `json:"createdAt"`
}

// Secrets lists the active client secrets, oldest first.
func (s *Server) Secrets() []SecretInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.secretInfosLocked()
}

func (s *Server) secretInfosLocked() []SecretInfo {
	out := make([]SecretInfo, 0, len(s.secrets))
	for _, cs := range s.secrets {
		out = append(out, SecretInfo{ID: cs.id, Description: cs.description, ClientID: s.creds.ClientID, CreatedAt: cs.createdAt})
	}
	return out
}

// SecretWorks reports whether a login with this client secret would succeed.
func (s *Server) SecretWorks(secret string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.findSecretLocked(secret) != nil
}

// handleMapsIndoorsToken is the IdentityServer-style /connect/token: a
// form POST with the client authenticated in the body (client_secret_post)
// or by HTTP Basic (client_secret_basic), as IdentityServer accepts both.
func (s *Server) handleMapsIndoorsToken(_ Endpoint, w http.ResponseWriter, r *http.Request) {
	if !formPost(w, r) {
		return
	}
	form := r.PostForm
	clientID, clientSecret, basic, err := clientAuth(r)
	if err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if !basic {
		clientID, clientSecret = form.Get("client_id"), form.Get("client_secret")
	}
	scope := strings.Join(strings.Fields(form.Get("scope")), " ")
	if s.allowedScopes != nil {
		for _, sc := range strings.Fields(scope) {
			if !s.allowedScopes[sc] {
				writeOAuthError(w, http.StatusBadRequest, "invalid_scope", "scope "+sc+" is not allowed for this client")
				return
			}
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.recordLocked(EndpointToken, form)
	switch form.Get("grant_type") {
	case "client_credentials":
		if clientID != s.creds.ClientID || s.findSecretLocked(clientSecret) == nil {
			s.writeClientError(w, basic)
			return
		}
	case "password":
		if clientID != PasswordClientID || clientSecret != "" {
			s.writeClientError(w, basic)
			return
		}
		if !equal(form.Get("username"), s.creds.Username) || !equal(form.Get("password"), s.creds.Password) {
			writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "invalid username or password")
			return
		}
	case "":
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "grant_type is missing")
		return
	default:
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
		return
	}
	token, expiresIn := s.issueLocked("")
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": token,
		"expires_in":   expiresIn,
		"token_type":   "Bearer",
		"scope":        scope,
	})
}

// clientAuth reads HTTP Basic client authentication, whose parts RFC 6749
// §2.3.1 form-encodes.
func clientAuth(r *http.Request) (id, secret string, ok bool, err error) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", "", false, nil
	}
	if r.PostForm.Get("client_secret") != "" {
		return "", "", false, errors.New("the client authenticated in more than one way")
	}
	if id, err = url.QueryUnescape(user); err != nil {
		return "", "", false, errors.New("the Basic user does not decode")
	}
	if secret, err = url.QueryUnescape(pass); err != nil {
		return "", "", false, errors.New("the Basic password does not decode")
	}
	return id, secret, true, nil
}

func (s *Server) findSecretLocked(value string) *clientSecret {
	for _, cs := range s.secrets {
		if equal(cs.value, value) {
			return cs
		}
	}
	return nil
}

// handleClientCredentials is the clientcredentials API: GET lists, POST
// creates, DELETE deletes, all behind a bearer token and a customerId.
func (s *Server) handleClientCredentials(ep Endpoint, w http.ResponseWriter, r *http.Request) {
	if !s.bearerOK(r) {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
		return
	}
	q := r.URL.Query()
	switch customer := q.Get("customerId"); {
	case customer == "":
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "customerId is required"})
		return
	case customer != s.creds.CustomerID:
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "forbidden", "error_description": "not your customer"})
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	switch ep {
	case EndpointListSecrets:
		writeJSON(w, http.StatusOK, s.secretInfosLocked())
	case EndpointCreateSecret:
		cs := &clientSecret{
			id:          randomHex(12),
			description: q.Get("description"),
			createdAt:   time.Now().UTC(),
			value:       randomString("", 72),
		}
		s.secrets = append(s.secrets, cs)
		s.everSecrets = append(s.everSecrets, cs.value)
		writeJSON(w, http.StatusOK, map[string]any{
			"id": cs.id, "description": cs.description, "createdAt": cs.createdAt, "secret": cs.value,
		})
	case EndpointDeleteSecret:
		id := q.Get("id")
		for i, cs := range s.secrets {
			if cs.id == id {
				s.secrets = append(s.secrets[:i], s.secrets[i+1:]...)
				w.WriteHeader(http.StatusOK)
				return
			}
		}
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found", "error_description": "no client secret with that id"})
	}
}

func (s *Server) bearerOK(r *http.Request) bool {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && s.TokenLive(token)
}
