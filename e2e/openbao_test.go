package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/openbao/openbao/sdk/v2/helper/consts"
	"github.com/openbao/openbao/sdk/v2/helper/pluginutil"
	"github.com/openbao/openbao/sdk/v2/logical"
	baoplugin "github.com/openbao/openbao/sdk/v2/plugin"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// The plugin under OpenBao's own host side of the plugin protocol, from
// OpenBao's sdk: OpenBao launches it (BAO_* and the upstream VAULT_*
// environment, AutoMTLS, the plugin's checksum checked), multiplexes mounts
// over one process, and serves each mount's storage and system view
// through its gRPC broker, which has no events service. OpenBao's server
// module cannot be fetched from the Go module proxy, so the catalog part
// of the server (which process, which connection) is the small baoCatalog
// below, doing what OpenBao's vault/plugin_catalog.go does.

// openbaoVersion is the server version the catalog tells the plugin
// (BAO_VERSION and VAULT_VERSION), as an OpenBao v2.4 server does.
const openbaoVersion = "2.4.0"

// baoCatalog is OpenBao's plugin catalog, reduced to one registered plugin:
// it implements pluginutil.LookRunnerUtil as OpenBao's system view does.
type baoCatalog struct {
	logical.StaticSystemView
	t      *testing.T
	runner pluginutil.PluginRunner

	mu      sync.Mutex
	client  *plugin.Client // the one process every mount shares
	muxed   bool
	spawned int
}

func newBaoCatalog(t *testing.T, p pluginBuild) *baoCatalog {
	t.Helper()
	sum, err := hex.DecodeString(p.SHA256)
	require.NoError(t, err)
	c := &baoCatalog{
		t:                t,
		StaticSystemView: logical.StaticSystemView{VersionString: openbaoVersion},
		runner: pluginutil.PluginRunner{
			Name: pluginName, Type: consts.PluginTypeSecrets, Version: p.Version,
			Command: filepath.Join(pluginDir, p.Command), Sha256: sum,
		},
	}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.client != nil {
			c.client.Kill()
		}
	})
	return c
}

func (c *baoCatalog) LookupPlugin(ctx context.Context, name string, typ consts.PluginType) (*pluginutil.PluginRunner, error) {
	return c.LookupPluginVersion(ctx, name, typ, "")
}

func (c *baoCatalog) LookupPluginVersion(_ context.Context, name string, typ consts.PluginType, version string) (*pluginutil.PluginRunner, error) {
	if name != c.runner.Name || typ != c.runner.Type || (version != "" && version != c.runner.Version) {
		return nil, fmt.Errorf("no plugin %s %s %s in the catalog", typ, name, version)
	}
	r := c.runner
	return &r, nil
}

// NewPluginClient starts the plugin process, or, once the plugin said it
// multiplexes, hands out another connection to the same process that
// names its mount in the gRPC metadata.
func (c *baoCatalog) NewPluginClient(ctx context.Context, config pluginutil.PluginClientConfig) (pluginutil.PluginClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client == nil || !c.muxed || c.client.Exited() {
		client, err := c.runner.RunConfig(ctx,
			pluginutil.PluginSets(config.PluginSets),
			pluginutil.HandshakeConfig(config.HandshakeConfig),
			pluginutil.Logger(config.Logger),
			pluginutil.MetadataMode(config.IsMetadataMode),
			pluginutil.AutoMTLS(config.AutoMTLS),
			pluginutil.Runner(config.Wrapper))
		if err != nil {
			return nil, err
		}
		c.client = client
		c.spawned++
	}
	rpc, err := c.client.Client()
	if err != nil {
		return nil, err
	}
	conn := rpc.(*plugin.GRPCClient).Conn
	if c.muxed, err = pluginutil.MultiplexingSupported(ctx, conn, config.Name); err != nil {
		return nil, err
	}
	return &baoPluginClient{ClientProtocol: rpc, conn: &muxConn{ClientConn: conn, id: fmt.Sprintf("mount-%d", time.Now().UnixNano())}}, nil
}

// baoPluginClient is one mount's connection to the plugin process.
type baoPluginClient struct {
	plugin.ClientProtocol
	conn *muxConn
}

func (p *baoPluginClient) Conn() grpc.ClientConnInterface { return p.conn }
func (p *baoPluginClient) Reload() error                  { return errors.New("reload is not part of this test") }
func (p *baoPluginClient) Close() error                   { return nil } // the catalog ends the process

// muxConn puts the mount's multiplexing id on every call.
type muxConn struct {
	*grpc.ClientConn
	id string
}

func (m *muxConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	ctx = metadata.AppendToOutgoingContext(ctx, pluginutil.MultiplexingCtxKey, m.id)
	return m.ClientConn.Invoke(ctx, method, args, reply, opts...)
}

func (m *muxConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, pluginutil.MultiplexingCtxKey, m.id)
	return m.ClientConn.NewStream(ctx, desc, method, opts...)
}

// baoMount is one mount of the plugin, with its own storage, as OpenBao
// mounts it: NewBackendV5, Setup, Initialize.
type baoMount struct {
	t       *testing.T
	backend logical.Backend
	storage *logical.InmemStorage
	path    string
}

func mountUnderOpenBao(t *testing.T, c *baoCatalog, path string, logger hclog.Logger) *baoMount {
	t.Helper()
	ctx := context.Background()
	storage := &logical.InmemStorage{}
	conf := &logical.BackendConfig{
		StorageView: storage,
		Logger:      logger,
		System: logical.StaticSystemView{
			DefaultLeaseTTLVal: time.Hour, MaxLeaseTTLVal: 24 * time.Hour, VersionString: openbaoVersion,
		},
		BackendUUID: path,
		Config: map[string]string{
			"plugin_name": pluginName, "plugin_type": consts.PluginTypeSecrets.String(), "plugin_version": c.runner.Version,
		},
	}
	b, err := baoplugin.NewBackendV5(ctx, pluginName, consts.PluginTypeSecrets, c.runner.Version, c, conf)
	require.NoError(t, err)
	t.Cleanup(func() { b.Cleanup(context.Background()) })
	require.NoError(t, b.Setup(ctx, conf))
	require.NoError(t, b.Initialize(ctx, &logical.InitializationRequest{Storage: storage}))
	return &baoMount{t: t, backend: b, storage: storage, path: path}
}

func (m *baoMount) do(op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
	m.t.Helper()
	req := &logical.Request{
		Operation: op, Path: path, Data: data, Storage: m.storage,
		MountPoint: m.path + "/", MountType: pluginName, ID: fmt.Sprintf("req-%d", time.Now().UnixNano()),
	}
	return m.backend.HandleRequest(context.Background(), req)
}

// mustDo is a request that must succeed, without an error response.
func (m *baoMount) mustDo(op logical.Operation, path string, data map[string]any) *logical.Response {
	m.t.Helper()
	resp, err := m.do(op, path, data)
	require.NoError(m.t, err, "%s %s", op, path)
	if resp != nil {
		require.False(m.t, resp.IsError(), "%s %s: %v", op, path, resp.Error())
	}
	return resp
}

// syncBuf is the server log: what the host side logs, and what the
// plugin logs through it.
type syncBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// The plugin serves config, roles, creds and rotate-root under OpenBao's
// host side, two mounts multiplexed over one process; OpenBao has no
// events service, and the plugin's events degrade to one log line without
// failing a request.
func TestOpenBao_HostSideRunsConfigRolesCredsRotate(t *testing.T) {
	requireVault(t) // the plugin binary is built by the harness
	t.Parallel()
	serverLog := &syncBuf{}
	logger := hclog.New(&hclog.LoggerOptions{Name: "openbao", Output: serverLog, Level: hclog.Debug})
	catalog := newBaoCatalog(t, pluginV1)

	// At registration OpenBao runs the plugin once to learn its type and
	// version (vault/plugin_catalog.go, getBackendPluginType).
	pc, err := catalog.NewPluginClient(context.Background(), pluginutil.PluginClientConfig{
		Name: pluginName, PluginSets: baoplugin.PluginSet, HandshakeConfig: baoplugin.HandshakeConfig,
		Logger: logger, AutoMTLS: true, Wrapper: catalog,
	})
	require.NoError(t, err)
	probe, err := baoplugin.Dispense(pc, pc)
	require.NoError(t, err)
	require.NoError(t, probe.Setup(context.Background(), &logical.BackendConfig{}))
	require.Equal(t, logical.TypeLogical, probe.Type())
	require.Equal(t, pluginV1.Version, probe.(logical.PluginVersioner).PluginVersion().Version)

	fakeA := startFake(t, fakeupstream.Options{TokenLifetime: 10 * time.Minute})
	fakeB := startFake(t, fakeupstream.Options{TokenLifetime: 10 * time.Minute})
	a := mountUnderOpenBao(t, catalog, "mapsindoors", logger.Named("mapsindoors"))
	b := mountUnderOpenBao(t, catalog, "other", logger.Named("other"))
	catalog.mu.Lock()
	require.True(t, catalog.muxed, "the plugin tells OpenBao it multiplexes")
	require.Equal(t, 1, catalog.spawned, "registration and both mounts share one process")
	catalog.mu.Unlock()

	cfg := fakeA.PluginConfig("mapsindoors")
	cfg["verify_connection"] = true
	a.mustDo(logical.UpdateOperation, "config", cfg)
	a.mustDo(logical.UpdateOperation, "roles/app", map[string]any{"ttl": "5m"})
	b.mustDo(logical.UpdateOperation, "config", fakeB.PluginConfig("mapsindoors"))

	got := a.mustDo(logical.ReadOperation, "config", nil).Data
	require.Equal(t, fakeA.Credentials().ClientID, got["client_id"])
	_, shown := got["client_secret"]
	require.False(t, shown, "a config read shows the secret")
	require.Equal(t, fakeB.Credentials().ClientID, b.mustDo(logical.ReadOperation, "config", nil).Data["client_id"],
		"each mount has its own storage in the shared process")
	_, err = b.do(logical.ReadOperation, "roles/app", nil)
	require.NoError(t, err)

	// creds: a live token as a lease.
	for range 3 {
		resp := a.mustDo(logical.ReadOperation, "creds/app", nil)
		token, _ := resp.Data["access_token"].(string)
		require.True(t, fakeA.TokenLive(token), "the token handed out is live at the fake")
		require.NotNil(t, resp.Secret)
		require.Positive(t, resp.Secret.TTL)
		require.False(t, resp.Secret.Renewable)
	}

	// rotate-root: a new secret, the old one gone, creds still served.
	old := fakeA.Credentials()
	rot := a.mustDo(logical.UpdateOperation, "rotate-root", nil).Data
	require.Equal(t, true, rot["previous_deleted"])
	require.False(t, fakeA.SecretWorks(old.ClientSecret))
	require.NotEqual(t, old.ClientSecretID, rot["client_secret_id"])
	token, _ := a.mustDo(logical.ReadOperation, "creds/app", nil).Data["access_token"].(string)
	require.True(t, fakeA.TokenLive(token))
	require.Equal(t, true, a.mustDo(logical.ReadOperation, "verify", nil).Data["ok"])

	// OpenBao's broker serves no events: the plugin says so once per mount
	// that tried to send one, and no request above failed for it.
	const noEvents = "does not take plugin events"
	eventually(t, 10*time.Second, "the plugin's line about events", func() bool {
		return strings.Contains(serverLog.String(), noEvents)
	})
	// Events sent after the line: none may log again.
	a.mustDo(logical.UpdateOperation, "rotate-root", nil)
	a.mustDo(logical.ReadOperation, "creds/app", nil)
	time.Sleep(time.Second) // the plugin sends events from a goroutine of its own
	lines := 0
	for _, l := range strings.Split(serverLog.String(), "\n") {
		if strings.Contains(l, noEvents) {
			require.Contains(t, l, "mapsindoors", "the line names the mount")
			require.Contains(t, l, "Unimplemented")
			lines++
		}
	}
	require.Equal(t, 1, lines, "one line for the mount that sent events, not one per event:\n%s", maskSensitive(serverLog.String()))
	require.False(t, strings.Contains(serverLog.String(), "a Vault event was not sent"), "a line per event that was not sent")
	for _, s := range append(fakeA.Sensitive(), fakeB.Sensitive()...) {
		require.False(t, strings.Contains(serverLog.String(), s), "no secret or token in the server log") // not NotContains: it would print it
	}
}
