package upstream

import "net/http"

// acceptJSONTransport asks for JSON, as CameraManager's page requires and
// every other upstream here answers anyway.
type acceptJSONTransport struct{ base http.RoundTripper }

func (t *acceptJSONTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("Accept") == "" {
		req = req.Clone(req.Context())
		req.Header.Set("Accept", "application/json")
	}
	return t.base.RoundTrip(req)
}

// CloseIdleConnections passes through, so replaced clients let go of their
// pooled connections.
func (t *acceptJSONTransport) CloseIdleConnections() {
	if ci, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}
