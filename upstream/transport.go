package upstream

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
)

// formParamsTransport adds parameters to the form body of a token request.
type formParamsTransport struct {
	base   http.RoundTripper
	params url.Values
}

func (t *formParamsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body == nil || req.Method != http.MethodPost {
		return t.base.RoundTrip(req)
	}
	data, err := io.ReadAll(req.Body)
	req.Body.Close()
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
