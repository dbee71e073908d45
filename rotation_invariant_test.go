package mapsindoors

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// The rotation invariant, tried at every step: whatever single fault hits
// any storage write, storage read or upstream call of a rotation, of the
// deletion of the secret it replaced, or of the rollback of a rotation that
// crashed, once
// Vault's rollback and periodic functions have run,
//   - the stored secret works upstream,
//   - the only live upstream secrets are the stored one and those the
//     config shows as pending deletion (none, once their grace is over),
//   - nothing Vault did not create or replace is ever deleted, and
//   - creds reads worked throughout: none waited for the rotation.

type faultKind string

const (
	faultError           faultKind = "error"
	faultCommitThenError faultKind = "commit, then error"
	faultCrashBefore     faultKind = "crash before"
	faultCrashAfter      faultKind = "crash after"
	// faultLate: the call fails, but the upstream does it a moment later,
	// after the process has moved on.
	faultLate faultKind = "fails, then lands late"
	// faultLeadershipLost: the write fails because the node lost its
	// leadership, and the next leader commits it; the node writes nothing
	// more, and Vault starts the plugin on the new active node.
	faultLeadershipLost faultKind = "leadership lost, committed by the next leader"
)

var (
	storageFaults  = []faultKind{faultError, faultCommitThenError, faultCrashBefore, faultCrashAfter, faultLeadershipLost}
	upstreamFaults = []faultKind{faultError, faultCrashBefore, faultCrashAfter, faultLate}
	// A read changes nothing: it fails, or the process dies at it.
	readFaults = []faultKind{faultError, faultCrashBefore}

	errInjected = errors.New("injected fault")
	errCrashed  = errors.New("the process is gone")
)

// chaos counts the storage writes and upstream calls of one process, and
// apart from them its storage reads, and injects one fault at the armed step
// or the armed read. After a crash every further step of that process fails,
// as nothing a dead process does reaches anything.
type chaos struct {
	mu         sync.Mutex
	trace      []string
	target     int
	kind       faultKind
	reads      []string
	readTarget int
	readKind   faultKind
	dead       bool
	onFirst    func()
	// late is what lands after the process moved on (or died).
	late func()
	// readOnly: the process lost its leadership; its writes fail from now.
	readOnly bool
}

// land applies what was to land late.
func (c *chaos) land() {
	c.mu.Lock()
	late := c.late
	c.late = nil
	c.mu.Unlock()
	if late != nil {
		late()
	}
}

func (c *chaos) setLate(fn func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.late = fn
}

func (c *chaos) arm(target int, kind faultKind) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.trace, c.target, c.kind, c.dead, c.late, c.readOnly = nil, target, kind, false, nil, false
	c.reads, c.readTarget, c.readKind = nil, 0, ""
}

// armRead makes the fault hit the target-th storage read instead.
func (c *chaos) armRead(target int, kind faultKind) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads, c.readTarget, c.readKind = nil, target, kind
}

// read records a storage read and says whether it fails, and how.
func (c *chaos) read(op string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return errCrashed
	}
	c.reads = append(c.reads, op)
	if len(c.reads) != c.readTarget {
		return nil
	}
	switch c.readKind {
	case faultError:
		return errInjected
	case faultCrashBefore:
		c.dead = true
		return errCrashed
	}
	return nil
}

func (c *chaos) readSteps() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.reads)
}

// step records op and says which fault, if any, hits it.
func (c *chaos) step(op string) (faultKind, bool) {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return "", true
	}
	c.trace = append(c.trace, op)
	n := len(c.trace)
	first := c.onFirst
	var kind faultKind
	if n == c.target {
		kind = c.kind
		if kind == faultCrashBefore || kind == faultCrashAfter {
			c.dead = true
		}
	}
	c.mu.Unlock()
	if n == 1 && first != nil {
		first()
	}
	return kind, false
}

func (c *chaos) isDead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dead
}

func (c *chaos) steps() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.trace)
}

// chaosStorage puts the chaos between a process and storage.
type chaosStorage struct {
	logical.Storage
	c *chaos
}

func storageOp(verb, key string) string {
	if strings.HasPrefix(key, "wal/") {
		key = "wal"
	}
	return verb + " " + key
}

func (s *chaosStorage) write(op string, do func() error) error {
	kind, dead := s.c.step(op)
	s.c.mu.Lock()
	readOnly := s.c.readOnly
	s.c.mu.Unlock()
	switch {
	case dead:
		return errCrashed
	case readOnly && kind == "":
		return errors.New("this node is not the leader") // it lost its leadership earlier
	case kind == faultError:
		return errInjected
	case kind == faultCommitThenError:
		if err := do(); err != nil {
			return err
		}
		return errInjected
	case kind == faultCrashBefore:
		return errCrashed
	case kind == faultCrashAfter:
		_ = do()
		return errCrashed
	case kind == faultLeadershipLost:
		s.c.mu.Lock()
		s.c.readOnly = true
		s.c.mu.Unlock()
		s.c.setLate(func() { _ = do() })
		return errors.New("leadership lost while committing")
	}
	return do()
}

func (s *chaosStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	return s.write(storageOp("put", e.Key), func() error { return s.Storage.Put(context.WithoutCancel(ctx), e) })
}

func (s *chaosStorage) Delete(ctx context.Context, key string) error {
	return s.write(storageOp("delete", key), func() error { return s.Storage.Delete(context.WithoutCancel(ctx), key) })
}

func (s *chaosStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	if err := s.c.read(storageOp("get", key)); err != nil {
		return nil, err
	}
	return s.Storage.Get(ctx, key)
}

func (s *chaosStorage) List(ctx context.Context, prefix string) ([]string, error) {
	if err := s.c.read(storageOp("list", prefix)); err != nil {
		return nil, err
	}
	return s.Storage.List(ctx, prefix)
}

// chaosClient puts the chaos between a process and the upstream. A crash
// after a call means the upstream did it and the answer was lost.
type chaosClient struct {
	upstream.Client
	c *chaos
}

func callWithChaos[T any](c *chaos, op string, call func() (T, error)) (T, error) {
	var zero T
	kind, dead := c.step(op)
	switch {
	case dead, kind == faultCrashBefore:
		return zero, errCrashed
	case kind == faultError:
		return zero, errInjected
	case kind == faultCrashAfter:
		_, _ = call()
		return zero, errCrashed
	case kind == faultLate:
		c.setLate(func() { _, _ = call() })
		return zero, errors.New("timed out")
	}
	return call()
}

// What lands late runs after the process's own contexts ended, and the
// client it went through may be closed by then: it uses a client of its own.
func (cc *chaosClient) Token(ctx context.Context, req upstream.TokenRequest) (*upstream.Token, error) {
	return callWithChaos(cc.c, "upstream token", func() (*upstream.Token, error) { return cc.Client.Token(context.WithoutCancel(ctx), req) })
}

func (cc *chaosClient) CreateClientSecret(ctx context.Context, d string) (*upstream.ClientSecret, error) {
	return callWithChaos(cc.c, "upstream create", func() (*upstream.ClientSecret, error) {
		return cc.Client.CreateClientSecret(context.WithoutCancel(ctx), d)
	})
}

func (cc *chaosClient) ListClientSecrets(ctx context.Context) ([]upstream.ClientSecret, error) {
	return callWithChaos(cc.c, "upstream list", func() ([]upstream.ClientSecret, error) {
		return cc.Client.ListClientSecrets(context.WithoutCancel(ctx))
	})
}

func (cc *chaosClient) DeleteClientSecret(ctx context.Context, id string) error {
	_, err := callWithChaos(cc.c, "upstream delete", func() (struct{}, error) {
		return struct{}{}, cc.Client.DeleteClientSecret(context.WithoutCancel(ctx), id)
	})
	return err
}

// invariantWorld is one scenario: a mount, the fake, a secret some other
// script created, and the clock.
type invariantWorld struct {
	e       *testEnv
	real    logical.Storage
	clock   *fixedClock
	chaos   *chaos
	foreign string
	reads   int
}

func newInvariantWorld(t *testing.T, grace string) *invariantWorld {
	// Tokens outlive the hours the test clock moves on.
	e := newTestEnv(t, fakeupstream.Options{TokenLifetime: 48 * time.Hour})
	w := &invariantWorld{e: e, real: e.storage, clock: &fixedClock{t: time.Now()}, chaos: &chaos{}}
	e.b.now = w.clock.Now
	e.configure(t, map[string]any{"previous_secret_grace": grace})
	e.role(t, "app", nil)
	e.read(t, "creds/app") // the mount's cached client is a healthy one

	// Another script's secret on the same account: never Vault's to delete.
	cfg := e.storedConfig(t).resolved()
	client, err := upstream.New(cfg.clientConfig())
	require.NoError(t, err)
	defer client.Close()
	other, err := client.CreateClientSecret(context.Background(), "another script")
	require.NoError(t, err)
	w.foreign = other.ID
	return w
}

// enterChaos routes the mount's storage and new clients through the chaos,
// and has the first step read creds of a cold role while the rotation (or
// deletion, or rollback) holds the write lock.
func (w *invariantWorld) enterChaos(t *testing.T, target int, kind faultKind) {
	w.chaos.arm(target, kind)
	w.e.storage = &chaosStorage{Storage: w.real, c: w.chaos}
	real := w.e.b.newClient
	w.e.b.newClient = func(c upstream.Config) (upstream.Client, error) {
		client, err := real(c)
		if err != nil {
			return nil, err
		}
		return &chaosClient{Client: client, c: w.chaos}, nil
	}
	w.chaos.onFirst = func() {
		w.reads++
		role := fmt.Sprintf("cold%d", w.reads)
		require.NoError(t, w.real.Put(context.Background(), &logical.StorageEntry{Key: roleStoragePrefix + role, Value: []byte("{}")}))
		done := make(chan *logical.Response, 1)
		go func() {
			resp, _ := w.e.b.HandleRequest(context.Background(), &logical.Request{
				Operation: logical.ReadOperation, Path: "creds/" + role, Storage: w.real, MountPoint: "mapsindoors/",
			})
			done <- resp
		}()
		select {
		case resp := <-done:
			require.NotNil(t, resp)
			require.False(t, resp.IsError(), "%v", resp.Error())
			require.True(t, w.e.fake.TokenLive(resp.Data["access_token"].(string)))
		case <-time.After(10 * time.Second):
			t.Fatal("a creds read waited for the rotation")
		}
	}
}

// leaveChaos is what follows: after a crash Vault starts the plugin anew
// (here or on another node) on the same storage; otherwise the same
// process goes on.
func (w *invariantWorld) leaveChaos(t *testing.T) {
	w.chaos.onFirst = nil
	w.e.storage = w.real
	w.chaos.land()
	w.chaos.mu.Lock()
	lostLeadership := w.chaos.readOnly
	w.chaos.mu.Unlock()
	if w.chaos.isDead() || lostLeadership {
		w.e.b = w.e.newBackend(t)
	} else {
		w.e.b.newClient = func(c upstream.Config) (upstream.Client, error) { return upstream.New(c) }
	}
	w.e.b.now = w.clock.Now
}

// settle runs what Vault runs on the active node: the periodic function
// and the rollback, once the WALs are old enough, and again once every
// grace is over. It checks the invariant at each stage.
func (w *invariantWorld) settle(t *testing.T) {
	w.e.rollback(t)
	w.check(t)
	w.e.ageWALs(t)
	w.e.rollback(t)
	w.check(t)
	w.clock.Add(time.Hour)
	w.e.rollback(t)
	w.e.rollback(t)
	w.check(t)

	stored := w.e.storedConfig(t)
	require.Empty(t, stored.PendingDeletions, "every grace is over: nothing is pending")
	require.Equal(t, map[string]bool{stored.ClientSecretID: true, w.foreign: true}, liveIDs(w.e.fake),
		"only the stored secret (and the other script's) is live")
	require.Empty(t, w.e.wals(t))
	w.e.role(t, "after", nil)
	w.e.read(t, "creds/after")
}

func (w *invariantWorld) check(t *testing.T) {
	t.Helper()
	stored := w.e.storedConfig(t)
	require.True(t, w.e.fake.SecretWorks(stored.ClientSecret), "the stored secret works upstream")
	require.NotEmpty(t, stored.ClientSecretID)
	allowed := map[string]bool{stored.ClientSecretID: true, w.foreign: true}
	for _, p := range stored.PendingDeletions {
		allowed[p.ID] = true
	}
	// Before Vault's rollback has acted, a WAL entry still names what a
	// stopped rotation created: that is what it is for.
	markers := map[string]bool{}
	for _, id := range w.e.wals(t) {
		entry, err := framework.GetWAL(context.Background(), w.real, id)
		require.NoError(t, err)
		if entry != nil {
			markers[rotationDescriptionPrefix+entry.Data.(map[string]any)["marker"].(string)] = true
		}
	}
	for _, cs := range w.e.fake.Secrets() {
		require.True(t, allowed[cs.ID] || markers[cs.Description],
			"live secret %s is neither stored, pending deletion nor named by a write-ahead log entry", cs.ID)
	}
	require.True(t, liveIDs(w.e.fake)[w.foreign], "a secret Vault did not create or replace is never deleted")
}

// phase is one piece of work whose every step is faulted.
type phase struct {
	name  string
	grace string
	// setup brings the world to where the phase starts, without faults.
	setup func(t *testing.T, w *invariantWorld)
	// run is the work the faults hit.
	run func(t *testing.T, w *invariantWorld)
}

func invariantPhases() []phase {
	rotate := func(t *testing.T, w *invariantWorld) { _, _ = w.e.rotate(t) }
	// Vault logs what its rollback request returns and sends it again a
	// minute later: under a fault it may fail, and settle sends it again.
	rollback := func(t *testing.T, w *invariantWorld) {
		_, _ = w.e.do(t, logical.RollbackOperation, "", map[string]any{})
	}
	return []phase{
		{name: "rotation", grace: "0s", setup: func(*testing.T, *invariantWorld) {}, run: rotate},
		{name: "rotation with grace", grace: "10m", setup: func(*testing.T, *invariantWorld) {}, run: rotate},
		{
			name: "deleting the replaced secret", grace: "10m",
			setup: func(t *testing.T, w *invariantWorld) {
				_, err := w.e.rotate(t)
				require.NoError(t, err)
				w.e.read(t, "creds/app")
				w.clock.Add(11 * time.Minute)
			},
			run: rollback,
		},
		{
			name: "rollback of a crashed rotation", grace: "0s",
			setup: func(t *testing.T, w *invariantWorld) {
				w.enterChaos(t, 3, faultCrashAfter) // the create's answer is lost with the process
				w.chaos.onFirst = nil
				_, _ = w.e.rotate(t)
				require.Equal(t, []string{"put wal", "upstream create"}, w.chaos.steps()[:2])
				w.leaveChaos(t)
				w.e.read(t, "creds/app")
				w.e.ageWALs(t)
			},
			run: rollback,
		},
	}
}

func TestRotationInvariant_EveryFaultAtEveryStep(t *testing.T) {
	cases := 0
	for _, p := range invariantPhases() {
		// A clean run names the steps.
		w := newInvariantWorld(t, p.grace)
		p.setup(t, w)
		w.enterChaos(t, 0, "")
		p.run(t, w)
		steps, reads := w.chaos.steps(), w.chaos.readSteps()
		w.leaveChaos(t)
		w.settle(t)
		require.NotEmpty(t, steps, p.name)
		require.NotEmpty(t, reads, p.name)

		for i, op := range steps {
			kinds := upstreamFaults
			if !strings.HasPrefix(op, "upstream") {
				kinds = storageFaults
			}
			for _, kind := range kinds {
				cases++
				t.Run(fmt.Sprintf("%s/step %d %s/%s", p.name, i+1, op, kind), func(t *testing.T) {
					w := newInvariantWorld(t, p.grace)
					p.setup(t, w)
					w.enterChaos(t, i+1, kind)
					p.run(t, w)
					require.Equal(t, op, w.chaos.steps()[i], "the run took the same steps up to the fault")
					w.leaveChaos(t)
					w.settle(t)
				})
			}
		}
		for i, op := range reads {
			for _, kind := range readFaults {
				cases++
				t.Run(fmt.Sprintf("%s/read %d %s/%s", p.name, i+1, op, kind), func(t *testing.T) {
					w := newInvariantWorld(t, p.grace)
					p.setup(t, w)
					w.enterChaos(t, 0, "")
					w.chaos.armRead(i+1, kind)
					p.run(t, w)
					require.Equal(t, op, w.chaos.readSteps()[i], "the run made the same reads up to the fault")
					w.leaveChaos(t)
					w.settle(t)
				})
			}
		}
	}
	t.Logf("%d fault cases", cases)
	require.GreaterOrEqual(t, cases, 40)
}
