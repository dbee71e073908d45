package mapsindoors

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// The Vault events this engine sends, named under the plugin as Vault's own
// engines name theirs (kv-v2/data-write). Subscribing needs Vault
// Enterprise; on the community edition they go nowhere, and nothing waits
// for them. No event ever holds a secret, a password or a token.
//
//nolint:gosec // G101: event type names, not credentials.
const (
	eventTokenIssued           = "mapsindoors/token-issued"
	eventTokenRequestFailed    = "mapsindoors/token-request-failed"
	eventRotateRoot            = "mapsindoors/rotate-root"
	eventRotateRootFailed      = "mapsindoors/rotate-root-failed"
	eventPreviousSecretDeleted = "mapsindoors/previous-secret-deleted"
	eventLogoutFailed          = "mapsindoors/logout-failed"
	eventVerifyFailed          = "mapsindoors/verify-failed"
)

const (
	// eventQueueLimit bounds the events waiting to be sent; past it new
	// ones are dropped (and counted), never waited for.
	eventQueueLimit = 256
	// eventSendTimeout bounds one send to Vault.
	eventSendTimeout = 5 * time.Second
)

// eventQueue sends events one at a time from a goroutine of its own. A send
// is a round trip to Vault over the plugin's gRPC connection; made inline it
// would cost every creds read that round trip, and an events system that is
// slow or absent would reach the caller. The goroutine runs only while
// there is something to send, so a quiet mount holds none.
type eventQueue struct {
	mu      sync.Mutex
	pending []pendingEvent
	running bool
	dropped uint64
	// lastErr is the last send failure logged: a Vault without events
	// fails every send the same way, and one debug line says so.
	lastErr string
	// unsupported is set once the server answered a send with
	// codes.Unimplemented: it has no events RPC (Vault before 1.13,
	// OpenBao), and later events are not sent at all.
	unsupported bool
	// inFlight lets tests wait until every queued event was handed over.
	inFlight sync.WaitGroup
}

type pendingEvent struct {
	eventType string
	metadata  []string
}

// emit queues an event with metadata as key, value pairs. It never blocks
// and never fails the request that caused it.
func (b *backend) emit(eventType string, metadata ...string) {
	q := b.events
	q.mu.Lock()
	if q.unsupported {
		q.mu.Unlock()
		return
	}
	if len(q.pending) >= eventQueueLimit {
		q.dropped++
		q.mu.Unlock()
		return
	}
	q.pending = append(q.pending, pendingEvent{eventType: eventType, metadata: metadata})
	q.inFlight.Add(1)
	start := !q.running
	q.running = true
	q.mu.Unlock()
	if start {
		go b.sendEvents()
	}
}

func (b *backend) sendEvents() {
	q := b.events
	for {
		q.mu.Lock()
		if len(q.pending) == 0 {
			q.running = false
			q.mu.Unlock()
			return
		}
		ev := q.pending[0]
		q.pending = q.pending[1:]
		unsupported := q.unsupported
		q.mu.Unlock()
		if unsupported { // queued before the server said it has no events RPC
			q.inFlight.Done()
			continue
		}

		ctx, cancel := context.WithTimeout(context.Background(), eventSendTimeout)
		err := logical.SendEvent(ctx, b.Backend, ev.eventType, ev.metadata...)
		cancel()
		if err != nil {
			b.eventNotSent(ev.eventType, err)
		}
		q.inFlight.Done()
	}
}

// eventNotSent logs a failed send at debug level, once per kind of
// failure: on the community edition every send may fail alike. A server
// without the events RPC at all is logged once at info level, and this
// mount sends no event to it again.
func (b *backend) eventNotSent(eventType string, err error) {
	q := b.events
	q.mu.Lock()
	if status.Code(err) == codes.Unimplemented {
		first := !q.unsupported
		q.unsupported = true
		q.mu.Unlock()
		if first {
			b.Logger().Info("this server does not take plugin events (no events RPC: Vault before 1.13, or OpenBao); this mount sends none from now on",
				"event_type", eventType, "error", err)
		}
		return
	}
	repeat := q.lastErr == err.Error()
	q.lastErr = err.Error()
	q.mu.Unlock()
	if !repeat {
		b.Logger().Debug("a Vault event was not sent (events need a Vault that accepts them); further failures like it are not logged",
			"event_type", eventType, "error", err)
	}
}

// wait returns once every event queued so far was sent or given up on.
func (q *eventQueue) wait() { q.inFlight.Wait() }

func (q *eventQueue) droppedCount() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// What follows are the hooks the request paths call: each counts what
// happened for status and sends its event.

// leaseIssued is a creds read that handed out a token. Where every lease
// gets a token of its own, the upstream issued it for this read, which is
// also a token-issued event.
func (b *backend) leaseIssued(r *roleRead, tok *upstream.Token) {
	b.metrics.leasesIssued.Add(1)
	if r.perLease {
		b.tokenIssued(r, tok, false)
	}
}

// tokenIssued is a new token from the upstream for a role: its scopes, type,
// lifetime and expiry, never the token; the path of the read that caused
// it, and whether it was fetched ahead of its switch (the read only armed
// the fetch). It is sent per upstream token, not per read: a shared token
// serves many reads, each in the audit log, and an event per read would
// cost Vault a round trip per read (about a quarter of its creds read rate,
// measured through a real Vault).
func (b *backend) tokenIssued(r *roleRead, tok *upstream.Token, ahead bool) {
	b.emit(eventTokenIssued,
		logical.EventMetadataPath, r.path,
		logical.EventMetadataOperation, string(logical.ReadOperation),
		"role", r.name,
		"fetched_ahead", strconv.FormatBool(ahead),
		"scope", tok.Scope,
		"token_type", tok.TokenType,
		"expires_at", tok.ExpiresAt.UTC().Format(time.RFC3339),
		"lifetime", strconv.FormatInt(int64(tok.Lifetime()/time.Second), 10))
}

// tokenRequestFailed is a read whose token request failed.
func (b *backend) tokenRequestFailed(r *roleRead, err error) {
	b.metrics.credsFailures.Add(1)
	b.emit(eventTokenRequestFailed, append([]string{
		logical.EventMetadataPath, r.path,
		logical.EventMetadataOperation, string(logical.ReadOperation),
		"role", r.name,
	}, upstreamErrorMetadata(err)...)...)
}

// tokenRevoked counts a lease's end by what became of its token.
func (b *backend) tokenRevoked(outcome string) { b.metrics.revocation(outcome) }

// logoutFailed is a revocation whose logout failed; Vault retries it.
func (b *backend) logoutFailed(role string, err error) {
	b.metrics.revocation(outcomeFailed)
	b.emit(eventLogoutFailed, append([]string{
		logical.EventMetadataPath, "creds/" + role,
		logical.EventMetadataOperation, string(logical.RevokeOperation),
		"role", role,
	}, upstreamErrorMetadata(err)...)...)
}

// Steps of rotate-root, named in the rotate-root-failed event.
const (
	stepPrepare = "prepare"
	stepWAL     = "write-ahead-log"
	stepCreate  = "create"
	stepProve   = "prove"
	stepStore   = "store"
)

// rotationStepError names the step of a rotation that failed and the ids
// it was dealing with, for the rotate-root-failed event. Its text is the
// error's own.
type rotationStepError struct {
	step       string
	previousID string
	newID      string
	err        error
}

func (e *rotationStepError) Error() string { return e.err.Error() }
func (e *rotationStepError) Unwrap() error { return e.err }

// failedAt tags a rotation's error with its step; cfg is the config being
// rotated and newID the secret created so far, if any.
func failedAt(step string, cfg *config, newID string, err error) error {
	return &rotationStepError{step: step, previousID: cfg.ClientSecretID, newID: newID, err: err}
}

// rotationDone is a rotation's outcome. A rotation that was not due (nil,
// nil) or was refused as the caller's mistake (a 400) is not one.
func (b *backend) rotationDone(trigger string, res *rotationResult, err error) {
	var ue userError
	switch {
	case err != nil && errors.As(err, &ue):
	case err != nil:
		b.metrics.rotation(outcomeFailed)
		step := &rotationStepError{step: stepPrepare}
		errors.As(err, &step)
		b.emit(eventRotateRootFailed,
			logical.EventMetadataPath, "rotate-root",
			logical.EventMetadataOperation, string(logical.UpdateOperation),
			"trigger", trigger,
			"step", step.step,
			"client_secret_id", step.previousID,
			"new_client_secret_id", step.newID,
			"error", err.Error())
	case res != nil:
		b.metrics.rotation(outcomeSucceeded)
		b.emit(eventRotateRoot,
			logical.EventMetadataPath, "rotate-root",
			logical.EventMetadataOperation, string(logical.UpdateOperation),
			logical.EventMetadataModified, "true",
			"trigger", trigger,
			"client_secret_id", res.ClientSecretID,
			"previous_client_secret_id", res.PreviousClientSecretID,
			"rotated_at", formatTime(res.RotatedAt),
			"previous_deleted", strconv.FormatBool(res.PreviousDeleted),
			"previous_deletion_due", formatTime(res.PreviousDeletionDue))
	}
}

// previousSecretDeleted is a replaced client secret deleted upstream.
func (b *backend) previousSecretDeleted(p pendingDeletion) {
	b.metrics.secretDeleted()
	b.emit(eventPreviousSecretDeleted,
		logical.EventMetadataPath, "config",
		logical.EventMetadataModified, "true",
		"client_secret_id", p.ID,
		"replaced_at", formatTime(p.ReplacedAt),
		"due_at", formatTime(p.DueAt))
}

// upstreamErrorMetadata describes a failed upstream exchange: its HTTP
// status, its OAuth2 error code and the error's text, which the upstream
// package keeps free of secrets.
func upstreamErrorMetadata(err error) []string {
	status, code := upstreamStatus(err)
	return []string{
		"upstream_status", strconv.Itoa(status),
		"oauth2_error", code,
		"error", strings.TrimSpace(err.Error()),
	}
}

// upstreamStatus is the HTTP status and OAuth2 error code of a failed
// upstream exchange; 0 and "" when no answer came back.
func upstreamStatus(err error) (int, string) {
	var ue *upstream.Error
	if errors.As(err, &ue) {
		return ue.StatusCode, ue.Code
	}
	return 0, ""
}
