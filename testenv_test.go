package mapsindoors

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/helper/errutil"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// testEnv is a backend on in-memory storage, with its log captured, in
// front of a fake upstream over real TLS.
type testEnv struct {
	b       *backend
	storage logical.Storage
	fake    *fakeupstream.Server
	logs    *syncBuffer
	// responses and errors collect every response and error the backend
	// gave through do and write, to check for leaked secrets at the end.
	recordMu  sync.Mutex
	responses []*logical.Response
	errors    []string
	// verifyConfigWrites keeps the login a config write makes by default
	// (verify_connection). Tests count upstream requests exactly, so the
	// harness writes configs with verify_connection=false unless a test
	// turns this on or names the field itself; path_verify_test.go tests
	// the default, and the end-to-end suite runs with it everywhere.
	verifyConfigWrites bool
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func newTestEnv(t testing.TB, opts fakeupstream.Options, tune ...func(*logical.BackendConfig)) *testEnv {
	t.Helper()
	fake, err := fakeupstream.Start(opts)
	require.NoError(t, err)
	t.Cleanup(fake.Close)

	e := &testEnv{storage: &logical.InmemStorage{}, fake: fake, logs: &syncBuffer{}}
	e.b = e.newBackend(t, tune...)
	t.Cleanup(func() {
		e.assertNoLeaks(t)
		require.Empty(t, fake.Unexpected(), "the fake got requests it does not serve")
	})
	return e
}

// newBackend builds a backend on the env's storage and log, as Vault does
// when it starts the plugin: at first, after a crash, on another node.
func (e *testEnv) newBackend(t testing.TB, tune ...func(*logical.BackendConfig)) *backend {
	t.Helper()
	conf := logical.TestBackendConfig()
	conf.StorageView = e.storage
	conf.Logger = hclog.New(&hclog.LoggerOptions{Output: e.logs, Level: hclog.Trace})
	for _, fn := range tune {
		fn(conf)
	}
	lb, err := Factory(context.Background(), conf)
	require.NoError(t, err)
	b := lb.(*backend)
	// Rotation proves a new secret with a few retries; tests need not wait.
	b.verifyBackoff = []time.Duration{time.Millisecond, time.Millisecond}
	return b
}

func (e *testEnv) configure(t testing.TB, overrides map[string]any) {
	t.Helper()
	data := e.fake.PluginConfig("mapsindoors")
	for k, v := range overrides {
		data[k] = v
	}
	resp, err := e.write(t, "config", data)
	require.NoError(t, err)
	require.False(t, resp != nil && resp.IsError(), "config write: %v", resp)
}

func (e *testEnv) role(t testing.TB, name string, data map[string]any) {
	t.Helper()
	resp, err := e.write(t, "roles/"+name, data)
	require.NoError(t, err)
	require.False(t, resp != nil && resp.IsError(), "role write: %v", resp)
}

func (e *testEnv) do(t testing.TB, op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
	t.Helper()
	req := &logical.Request{
		Operation:  op,
		Path:       path,
		Data:       data,
		Storage:    e.storage,
		MountPoint: "mapsindoors/",
	}
	resp, err := e.b.HandleRequest(context.Background(), req)
	e.record(resp)
	e.recordErr(err)
	return resp, err
}

// write is a create or an update, as Vault would pick it with the path's
// existence check.
func (e *testEnv) write(t testing.TB, path string, data map[string]any) (*logical.Response, error) {
	t.Helper()
	if _, named := data[verifyConnectionField]; path == "config" && !e.verifyConfigWrites && !named {
		data = maps.Clone(data)
		if data == nil {
			data = map[string]any{}
		}
		data[verifyConnectionField] = false
	}
	req := &logical.Request{Operation: logical.CreateOperation, Path: path, Data: data, Storage: e.storage}
	_, exists, err := e.b.HandleExistenceCheck(context.Background(), req)
	var userErr errutil.UserError
	if errors.As(err, &userErr) {
		// Vault answers a field that does not parse with a 400 here.
		resp := logical.ErrorResponse(err.Error())
		e.record(resp)
		return resp, nil
	}
	if err != nil {
		e.recordErr(err)
		return nil, err
	}
	op := logical.CreateOperation
	if exists {
		op = logical.UpdateOperation
	}
	return e.do(t, op, path, data)
}

func (e *testEnv) read(t testing.TB, path string) *logical.Response {
	t.Helper()
	resp, err := e.do(t, logical.ReadOperation, path, nil)
	require.NoError(t, err)
	require.NotNil(t, resp, "read %s", path)
	require.False(t, resp.IsError(), "read %s: %v", path, resp.Error())
	return resp
}

func (e *testEnv) record(resp *logical.Response) {
	if resp == nil {
		return
	}
	e.recordMu.Lock()
	defer e.recordMu.Unlock()
	e.responses = append(e.responses, resp)
}

func (e *testEnv) recordErr(err error) {
	if err == nil {
		return
	}
	e.recordMu.Lock()
	defer e.recordMu.Unlock()
	e.errors = append(e.errors, err.Error())
}

// assertNoLeaks checks that no secret, password, refresh token or access
// token the fake knows is, in any encoding (secretForms), in the captured
// log, an error, a response (except the access_token field of a creds
// response and its lease's copy of it) or a storage entry other than the
// seal-wrapped config. It names where a secret was found, never the secret.
func (e *testEnv) assertNoLeaks(t testing.TB) {
	t.Helper()
	e.recordMu.Lock()
	defer e.recordMu.Unlock()
	places := map[string]string{"the server log": e.logs.String()}
	for i, r := range e.responses {
		data := make(map[string]any, len(r.Data))
		for k, v := range r.Data {
			if k == "access_token" && (r.Secret != nil || r.Data["last_vault_rotation"] != nil) {
				continue
			}
			data[k] = v
		}
		blob, err := json.Marshal(struct {
			Data     map[string]any
			Warnings []string
			Internal map[string]any
		}{data, r.Warnings, secretInternal(r)})
		require.NoError(t, err)
		places[fmt.Sprintf("response %d", i)] = string(blob)
	}
	for i, msg := range e.errors {
		places[fmt.Sprintf("error %d", i)] = msg
	}
	for key, value := range e.storageDump(t) {
		if key != configStoragePath {
			places["storage entry "+key] = value
		}
	}
	for _, s := range e.fake.Sensitive() {
		for _, form := range secretForms(s) {
			for place, text := range places {
				if strings.Contains(text, form.text) {
					t.Errorf("%s holds a secret or token (%s)", place, form.encoding)
				}
			}
		}
	}
}

// secretForm is a secret as some encoding writes it.
type secretForm struct{ encoding, text string }

// secretForms is every form in which a secret could leave: as it is, URL-
// and form-encoded, JSON-escaped (with and without HTML escaping), and in
// base64, standard and URL-safe, at each of the three alignments it can
// have inside a longer encoded text (HTTP Basic's "id:secret", say).
func secretForms(s string) []secretForm {
	forms := []secretForm{{"raw", s}, {"URL query encoding", url.QueryEscape(s)}, {"URL path encoding", url.PathEscape(s)}}
	for _, html := range []bool{true, false} {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(html)
		_ = enc.Encode(s)
		forms = append(forms, secretForm{"JSON", strings.TrimSuffix(strings.TrimSpace(buf.String()), `"`)[1:]})
	}
	for offset := range 3 {
		if len(s)-offset < 12 {
			break
		}
		whole := s[offset : offset+(len(s)-offset)/3*3]
		forms = append(forms,
			secretForm{"base64", base64.StdEncoding.EncodeToString([]byte(whole))},
			secretForm{"base64url", base64.URLEncoding.EncodeToString([]byte(whole))})
	}
	return forms
}

// secretInternal is the lease's internal data without the token it logs
// out on revocation: that stays in Vault's lease storage and never reaches
// a client or the audit log.
func secretInternal(r *logical.Response) map[string]any {
	if r.Secret == nil {
		return nil
	}
	out := map[string]any{}
	for k, v := range r.Secret.InternalData {
		if k == "access_token" && v == r.Data["access_token"] {
			continue
		}
		out[k] = v
	}
	return out
}

// requireBadRequest asserts a 400 whose message names what to fix.
func requireBadRequest(t testing.TB, resp *logical.Response, err error, mentions string) {
	t.Helper()
	require.NoError(t, err)
	require.NotNil(t, resp)
	// Only the keys: the data of a response that should have been refused
	// may hold a token, and test output is no place for one.
	require.True(t, resp.IsError(), "want an error response, got one with the fields %v", slices.Sorted(maps.Keys(resp.Data)))
	code, _ := logical.RespondErrorCommon(&logical.Request{}, resp, err)
	require.Equal(t, 400, code)
	require.Contains(t, resp.Error().Error(), mentions)
}

// fixedClock is a clock tests move by hand.
type fixedClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fixedClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fixedClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (e *testEnv) writeConfig(t testing.TB, data map[string]any) {
	t.Helper()
	resp, err := e.write(t, "config", data)
	require.NoError(t, err)
	require.False(t, resp != nil && resp.IsError(), "config write: %v", resp)
}

// withoutRotationStatus is the config as it was before a rotation failed
// and recorded its failure.
func withoutRotationStatus(c *config) *config {
	cp := c.clone()
	cp.Rotation = rotationStatus{}
	return cp
}

// requireSameToken fails unless got is the token want, without printing
// either: test output is no place for a token.
func requireSameToken(t testing.TB, want string, got any, msg string) {
	t.Helper()
	require.True(t, got == any(want), msg)
}

// requireNewToken fails unless got is a token (a non-empty string) other
// than old, without printing either.
func requireNewToken(t testing.TB, old, got any, msg string) {
	t.Helper()
	s, ok := got.(string)
	require.True(t, ok && s != "" && got != old, msg)
}

// requireNoSecretIn fails when text holds secret, without printing either
// (require.NotContains would print both).
func requireNoSecretIn(t testing.TB, text, secret, msg string) {
	t.Helper()
	require.False(t, strings.Contains(text, secret), msg)
}

// requireNoKey fails when m has key, without printing m (require.NotContains
// would print it, and with it the value it should not hold).
func requireNoKey(t testing.TB, m map[string]any, key string, msgAndArgs ...any) {
	t.Helper()
	_, has := m[key]
	require.False(t, has, msgAndArgs...)
}

// requireQuietlyEqual is require.Equal for values that may hold a secret
// (a stored config, a storage dump): a failure names the top-level keys
// that differ, never a value.
func requireQuietlyEqual(t testing.TB, want, got any, msg string) {
	t.Helper()
	if reflect.DeepEqual(want, got) {
		return
	}
	t.Fatalf("%s: they differ in %s (values not shown: they may hold a secret)", msg, differingKeys(want, got))
}

// differingKeys names the keys whose values differ between a and b as JSON
// objects, or says that the values are not objects.
func differingKeys(a, b any) string {
	var objA, objB map[string]json.RawMessage
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	if errA != nil || errB != nil || json.Unmarshal(ja, &objA) != nil || json.Unmarshal(jb, &objB) != nil {
		return "their value"
	}
	var keys []string
	for k := range objA {
		if v, ok := objB[k]; !ok || !bytes.Equal(v, objA[k]) {
			keys = append(keys, k)
		}
	}
	for k := range objB {
		if _, ok := objA[k]; !ok {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return "state JSON does not show"
	}
	slices.Sort(keys)
	return strings.Join(keys, ", ")
}

// storageDump is every entry in the env's storage, by key, so a test can
// show that a refused request changed nothing.
func (e *testEnv) storageDump(t testing.TB) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	var walk func(prefix string)
	walk = func(prefix string) {
		keys, err := e.storage.List(ctx, prefix)
		require.NoError(t, err)
		for _, k := range keys {
			if strings.HasSuffix(k, "/") {
				walk(prefix + k)
				continue
			}
			entry, err := e.storage.Get(ctx, prefix+k)
			require.NoError(t, err)
			if entry != nil {
				out[prefix+k] = string(entry.Value)
			}
		}
	}
	walk("")
	return out
}
