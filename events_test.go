package mapsindoors

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// recordingSender is Vault's side of the events connection: it keeps what
// it is sent, can fail every send, and can hold sends until released.
type recordingSender struct {
	mu     sync.Mutex
	events []recordedEvent
	err    error
	// hold, when set, holds every send until it is closed; holding is
	// closed when the first send is held.
	hold        chan struct{}
	holding     chan struct{}
	holdingOnce sync.Once
}

type recordedEvent struct {
	Type     string
	Metadata map[string]any
}

func (r *recordingSender) SendEvent(ctx context.Context, eventType logical.EventType, ev *logical.EventData) error {
	if r.hold != nil {
		r.holdingOnce.Do(func() { close(r.holding) })
		select {
		case <-r.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, recordedEvent{Type: string(eventType), Metadata: ev.GetMetadata().AsMap()})
	return r.err
}

func (r *recordingSender) sent() []recordedEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recordedEvent(nil), r.events...)
}

func (r *recordingSender) ofType(eventType string) []recordedEvent {
	var out []recordedEvent
	for _, ev := range r.sent() {
		if ev.Type == eventType {
			out = append(out, ev)
		}
	}
	return out
}

func withEvents(sender logical.EventSender) func(*logical.BackendConfig) {
	return func(c *logical.BackendConfig) { c.EventsSender = sender }
}

// Every event the engine sends, each caused as it happens in use, with what
// it says, and none holding a secret, a password or a token.
func TestEvents_EachEventAndNoSecretInAny(t *testing.T) {
	rec := &recordingSender{}
	e := newTestEnv(t, fakeupstream.Options{}, withEvents(rec))
	e.configure(t, map[string]any{"scopes": "integration"})
	e.role(t, "app", nil)
	first := e.fake.Credentials()

	// token-issued, once per upstream token: the next reads share it
	creds := e.read(t, "creds/app")
	e.read(t, "creds/app")
	e.read(t, "creds/app")
	// token-request-failed
	e.b.tokens.reset()
	e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Status: 401, Code: "invalid_client"})
	_, err := e.do(t, logical.ReadOperation, "creds/app", nil)
	require.Error(t, err)
	// rotate-root, previous-secret-deleted
	rot, err := e.rotate(t)
	require.NoError(t, err)
	// rotate-root-failed, at the create step and at the prove step
	e.fake.InjectFault(fakeupstream.EndpointCreateSecret, fakeupstream.Fault{Status: 500})
	_, err = e.rotate(t)
	require.Error(t, err)
	e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Status: 400, Code: "invalid_client", After: 1, Times: 3})
	_, err = e.rotate(t)
	require.Error(t, err)
	// verify-failed
	e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Status: 503, Code: "temporarily_unavailable", Times: -1})
	require.Equal(t, false, e.read(t, "verify").Data["ok"])
	e.fake.ClearFaults()
	// logout-failed
	e.settlePending(t) // another account: the old one's leftovers are settled first
	e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
	e.role(t, "cam", nil)
	cam := e.read(t, "creds/cam")
	e.fake.InjectFault(fakeupstream.EndpointCameraManagerLogout, fakeupstream.Fault{Status: 503})
	_, err = e.revoke(t, cam.Secret)
	require.Error(t, err)
	e.b.events.wait()

	one := func(eventType string) map[string]any {
		t.Helper()
		got := rec.ofType(eventType)
		require.NotEmpty(t, got, "no %s event", eventType)
		return got[0].Metadata
	}
	issued := one(eventTokenIssued)
	perRole := map[string]int{}
	for _, ev := range rec.ofType(eventTokenIssued) {
		perRole[ev.Metadata["role"].(string)]++
	}
	require.Equal(t, map[string]int{"app": 1, "cam": 1}, perRole, "one per token the upstream issued")
	require.Equal(t, "creds/app", issued[logical.EventMetadataPath])
	require.Equal(t, "false", issued["fetched_ahead"])
	require.Equal(t, "read", issued[logical.EventMetadataOperation])
	require.Equal(t, "app", issued["role"])
	require.Equal(t, "integration", issued["scope"])
	require.Equal(t, "Bearer", issued["token_type"])
	require.Equal(t, creds.Data["expires_at"], issued["expires_at"])
	require.Equal(t, "3600", issued["lifetime"])

	failed := one(eventTokenRequestFailed)
	require.Equal(t, "app", failed["role"])
	require.Equal(t, "401", failed["upstream_status"])
	require.Equal(t, "invalid_client", failed["oauth2_error"])
	require.Contains(t, failed["error"], "HTTP 401")

	rotated := one(eventRotateRoot)
	require.Equal(t, "rotate-root", rotated[logical.EventMetadataPath])
	require.Equal(t, "true", rotated[logical.EventMetadataModified])
	require.Equal(t, triggerManual, rotated["trigger"])
	require.Equal(t, rot.Data["client_secret_id"], rotated["client_secret_id"])
	require.Equal(t, first.ClientSecretID, rotated["previous_client_secret_id"])
	require.Equal(t, "true", rotated["previous_deleted"])

	deleted := one(eventPreviousSecretDeleted)
	require.Equal(t, first.ClientSecretID, deleted["client_secret_id"])
	require.NotEmpty(t, deleted["replaced_at"])

	rotFailed := rec.ofType(eventRotateRootFailed)
	require.Len(t, rotFailed, 2)
	require.Equal(t, stepCreate, rotFailed[0].Metadata["step"])
	require.Equal(t, rot.Data["client_secret_id"], rotFailed[0].Metadata["client_secret_id"])
	require.Equal(t, "", rotFailed[0].Metadata["new_client_secret_id"])
	require.Contains(t, rotFailed[0].Metadata["error"], "HTTP 500")
	require.Equal(t, stepProve, rotFailed[1].Metadata["step"])
	require.NotEmpty(t, rotFailed[1].Metadata["new_client_secret_id"], "the secret it created and could not prove")

	verifyFailed := one(eventVerifyFailed)
	require.Equal(t, "verify", verifyFailed[logical.EventMetadataPath])
	require.Equal(t, "503", verifyFailed["upstream_status"])

	logout := one(eventLogoutFailed)
	require.Equal(t, "creds/cam", logout[logical.EventMetadataPath])
	require.Equal(t, "cam", logout["role"])
	require.Equal(t, "503", logout["upstream_status"])

	// Each event holds only strings Vault can carry, and none of them is
	// a secret, a password or a token the fake ever handed out or took.
	blob, err := json.Marshal(rec.sent())
	require.NoError(t, err)
	for _, s := range e.fake.Sensitive() {
		if strings.Contains(string(blob), s) {
			t.Fatalf("an event holds a secret or token")
		}
	}
	for _, ev := range rec.sent() {
		require.True(t, strings.HasPrefix(ev.Type, "mapsindoors/"), ev.Type)
		for k, v := range ev.Metadata {
			require.IsType(t, "", v, "%s %s", ev.Type, k)
			require.NotEqual(t, "access_token", k)
		}
	}
}

// Vault's community edition may refuse events, or have no events system for
// the plugin at all: requests go on as if nothing happened, and the log
// says so once, at debug level.
func TestEvents_SendingNeverFailsOrDelaysARequest(t *testing.T) {
	cases := []struct {
		name   string
		sender logical.EventSender
		logged bool
	}{
		{"no events system", nil, true},
		{"events refused", &recordingSender{err: errors.New("events are not enabled")}, true},
		{"events accepted", &recordingSender{}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{}, withEvents(tc.sender))
			e.configure(t, nil)
			e.role(t, "app", nil)
			for range 5 {
				e.read(t, "creds/app")
			}
			require.Equal(t, true, e.read(t, "verify").Data["ok"])
			_, err := e.rotate(t)
			require.NoError(t, err)
			e.b.events.wait()
			lines := strings.Count(e.logs.String(), "a Vault event was not sent")
			if tc.logged {
				require.Equal(t, 1, lines, "one debug line, not one per event")
				require.Contains(t, e.logs.String(), "[DEBUG]")
			} else {
				require.Zero(t, lines)
			}
		})
	}
}

// A slow events system holds no request: events queue up to a bound, and
// past it they are dropped and counted.
func TestEvents_SlowVaultHoldsNoRequestAndTheQueueIsBounded(t *testing.T) {
	rec := &recordingSender{hold: make(chan struct{}), holding: make(chan struct{})}
	e := newTestEnv(t, fakeupstream.Options{}, withEvents(rec))
	e.configure(t, nil)
	e.role(t, "app", nil)

	// Each read gets a new token, and with it a token-issued event.
	const reads = eventQueueLimit + 44
	start := time.Now()
	e.read(t, "creds/app")
	<-rec.holding
	for range reads - 1 {
		e.b.tokens.reset()
		e.read(t, "creds/app")
	}
	require.Less(t, time.Since(start), eventSendTimeout, "no read waited for an event to be sent")
	// One event is with the sender, the queue is full, the rest dropped.
	const dropped = reads - 1 - eventQueueLimit
	require.EqualValues(t, dropped, e.read(t, "status").Data["events_dropped"])

	close(rec.hold)
	e.b.events.wait()
	require.Len(t, rec.ofType(eventTokenIssued), reads-dropped)
}

// A server without the events RPC (Vault before 1.13, OpenBao) answers
// every send with codes.Unimplemented, the way gRPC answers a method it
// does not serve. The engine says so in one log line and stops asking: no
// request fails, and no later event costs a round trip to a server that
// cannot take it.
func TestEvents_ServerWithoutTheEventsRPCIsAskedOnceAndLoggedOnce(t *testing.T) {
	rec := &recordingSender{err: status.Error(codes.Unimplemented, "unknown service pb.Events")}
	e := newTestEnv(t, fakeupstream.Options{}, withEvents(rec))
	e.configure(t, nil)
	e.role(t, "app", nil)
	for range 3 {
		e.b.tokens.reset()     // a new token each time: a token-issued event each
		e.read(t, "creds/app") // queued behind the first send, or after its answer
	}
	require.Equal(t, true, e.read(t, "verify").Data["ok"])
	_, err := e.rotate(t)
	require.NoError(t, err)
	e.b.events.wait()

	require.Len(t, rec.sent(), 1, "asked once; once it said it has no events RPC, never again")
	require.Equal(t, 1, strings.Count(e.logs.String(), "does not take plugin events"), e.logs.String())
	require.Zero(t, strings.Count(e.logs.String(), "a Vault event was not sent"), "not logged twice")
	require.Zero(t, e.read(t, "status").Data["events_dropped"], "not counted as dropped: there is nowhere to send them")
}

// A token-issued or token-request-failed event names the read that caused
// it: a static-creds read's says static-creds/<role> (a creds read's,
// creds/<role>: TestEvents_EachEventAndNoSecretInAny), and a token fetched
// ahead of its switch says so (fetched_ahead), with the path of the read
// that armed the fetch.
func TestEvents_TokenEventsNameTheReadThatCausedThem(t *testing.T) {
	rec := &recordingSender{}
	e := newTestEnv(t, fakeupstream.Options{TokenLifetime: 30 * time.Second}, withEvents(rec))
	clock := useSimClock(e)
	e.configure(t, nil)
	e.role(t, "app", nil)

	e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Status: 401, Code: "invalid_client"})
	_, err := e.do(t, logical.ReadOperation, "static-creds/app", nil)
	require.Error(t, err)
	e.b.outages.reset()
	e.read(t, "static-creds/app")
	for i := 0; e.fake.Hits(fakeupstream.EndpointToken) < 3; i++ {
		require.Less(t, i, 60, "no token was fetched ahead")
		clock.advance(time.Second)
		e.read(t, "static-creds/app")
		e.settle(clock)
	}
	e.b.events.wait()

	failed := rec.ofType(eventTokenRequestFailed)
	require.Len(t, failed, 1)
	require.Equal(t, "static-creds/app", failed[0].Metadata[logical.EventMetadataPath])
	issued := rec.ofType(eventTokenIssued)
	require.Len(t, issued, 2)
	require.Equal(t, "static-creds/app", issued[0].Metadata[logical.EventMetadataPath])
	require.Equal(t, "false", issued[0].Metadata["fetched_ahead"])
	require.Equal(t, "static-creds/app", issued[1].Metadata[logical.EventMetadataPath], "the path of the read that armed the fetch")
	require.Equal(t, "true", issued[1].Metadata["fetched_ahead"])
}
