package upstream

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
)

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

// formParamsTransport adds parameters to the form body of a token request
// x/oauth2 made, for the grants it sends none with (password, refresh),
// never replacing one the form has. The body it sends can be sent again.
type formParamsTransport struct {
	base   http.RoundTripper
	params url.Values
}

func (t *formParamsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body == nil || req.Method != http.MethodPost {
		return t.base.RoundTrip(req)
	}
	data, err := io.ReadAll(req.Body)
	_ = req.Body.Close()
	if err != nil {
		return nil, err
	}
	form, err := url.ParseQuery(string(data))
	if err != nil {
		return nil, err
	}
	for k, v := range t.params {
		if _, taken := form[k]; !taken {
			form[k] = v
		}
	}
	body := form.Encode()
	out := req.Clone(req.Context())
	out.Body = io.NopCloser(bytes.NewBufferString(body))
	out.ContentLength = int64(len(body))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewBufferString(body)), nil }
	return t.base.RoundTrip(out)
}

// rawBasicTransport sets HTTP Basic credentials as they are, without the
// form-encoding of RFC 6749 §2.3.1 that x/oauth2 applies (see
// AuthClientSecretBasicRaw).
type rawBasicTransport struct {
	base       http.RoundTripper
	user, pass string
}

func (t *rawBasicTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	out.SetBasicAuth(t.user, t.pass)
	return t.base.RoundTrip(out)
}
