package mapsindoors

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	roleStoragePrefix = "roles/"

	pathRolesHelpSyn  = "Manage the roles that creds are read for."
	pathRolesHelpDesc = `
A role names the scopes a token is requested with and caps the lease of the
tokens read from creds/<role> with ttl. A lease never outlives its token: it
is the shorter of ttl and the token's remaining life less a safety margin.
With ttl 0 the token's life alone sets the lease.
`
)

// roleEntry is a stored role.
type roleEntry struct {
	Scopes []string      `json:"scopes,omitempty"`
	TTL    time.Duration `json:"ttl,omitempty"`
	// Audience, Resource and TokenParams are extra token request
	// parameters some OAuth2 servers need.
	Audience    string            `json:"audience,omitempty"`
	Resource    string            `json:"resource,omitempty"`
	TokenParams map[string]string `json:"token_params,omitempty"`
	// TokenPerLease gives each lease a token of its own, revoked at the
	// config's revocation_url when the lease ends, instead of one shared
	// per role. Providers that need it (cameramanager) always do it.
	TokenPerLease bool `json:"token_per_lease,omitempty"`
}

// reservedTokenParams are the parameters the grant itself sets.
var reservedTokenParams = []string{"grant_type", "client_id", "client_secret", "username", "password", "scope", "refresh_token", "audience", "resource"}

// tokenParams are the role's extra token request parameters.
func (r *roleEntry) tokenParams() url.Values {
	v := url.Values{}
	for k, val := range r.TokenParams {
		v.Set(k, val)
	}
	if r.Audience != "" {
		v.Set("audience", r.Audience)
	}
	if r.Resource != "" {
		v.Set("resource", r.Resource)
	}
	if len(v) == 0 {
		return nil
	}
	return v
}

func pathRoles(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "roles/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "roles",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback: b.pathRolesList,
					Summary:  "List the roles.",
				},
			},
			HelpSynopsis:    pathRolesHelpSyn,
			HelpDescription: strings.TrimSpace(pathRolesHelpDesc),
		},
		{
			// Any name, so that one that does not fit gets a 400 that says
			// why (checkRoleName) rather than "unsupported path".
			Pattern: "roles/" + roleNameCapture,
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "role",
			},
			Fields: map[string]*framework.FieldSchema{
				"name": roleNameField(),
				"scopes": {
					Type:        framework.TypeCommaStringSlice,
					Description: "Scopes to request; the config's scopes when empty.",
				},
				"ttl": {
					Type:        framework.TypeDurationSecond,
					Description: "Upper bound of a lease; 0 lets the token's remaining life decide.",
				},
				"audience": {
					Type:        framework.TypeString,
					Description: "audience parameter sent with the token request, for servers that need one.",
				},
				"resource": {
					Type:        framework.TypeString,
					Description: "resource parameter (RFC 8707) sent with the token request.",
				},
				"token_params": {
					Type:        framework.TypeKVPairs,
					Description: "Other parameters sent with the token request, as key=value pairs.",
				},
				"token_per_lease": {
					Type:        framework.TypeBool,
					Description: "Give each lease a token of its own, revoked at the config's revocation_url when the lease is revoked or expires, instead of sharing one per role. Always on for cameramanager.",
				},
			},
			ExistenceCheck: b.pathRoleExistenceCheck,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback: b.pathRoleRead,
					Summary:  "Read a role.",
				},
				logical.CreateOperation: &framework.PathOperation{
					Callback: b.pathRoleWrite,
					Summary:  "Create a role.",
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback: b.pathRoleWrite,
					Summary:  "Change a role; fields not written keep their values.",
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback: b.pathRoleDelete,
					Summary:  "Delete a role; its leases run out as they are.",
				},
			},
			HelpSynopsis:    pathRolesHelpSyn,
			HelpDescription: strings.TrimSpace(pathRolesHelpDesc),
		},
	}
}

// roleNameCapture is the name of a role in a path pattern.
const roleNameCapture = `(?P<name>.+)`

// roleNameField is the name of a role in a path. It is a plain string:
// framework.TypeLowerCaseString would fold creds/ADMIN into role admin,
// past an ACL that denies creds/admin and out of an audit search for it.
func roleNameField() *framework.FieldSchema {
	return &framework.FieldSchema{
		Type:        framework.TypeString,
		Description: "Name of the role: lower case letters, digits, _, - and .",
		Required:    true,
	}
}

func (b *backend) pathRoleExistenceCheck(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	name := d.Get("name").(string)
	if checkRoleName(name) != nil {
		// Not a role: the handler refuses the name.
		return false, nil
	}
	r, err := getRole(ctx, req.Storage, name)
	return r != nil, err
}

func (b *backend) pathRolesList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, roleStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	return logical.ListResponse(names), nil
}

func (b *backend) pathRoleRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := checkRoleName(name); err != nil {
		return errorResponse(err)
	}
	r, err := getRole(ctx, req.Storage, name)
	if err != nil || r == nil {
		return nil, err
	}
	return &logical.Response{Data: r.data()}, nil
}

// data is what a read of the role shows, and what a write answers with.
func (r *roleEntry) data() map[string]any {
	scopes := r.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	params := r.TokenParams
	if params == nil {
		params = map[string]string{}
	}
	return map[string]any{
		"scopes":       scopes,
		"ttl":          int64(r.TTL / time.Second),
		"audience":     r.Audience,
		"resource":     r.Resource,
		"token_params": params,
		// Stored as written; the provider may turn it on regardless.
		"token_per_lease": r.TokenPerLease,
	}
}

func (b *backend) pathRoleWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := refusePrivateKeys(req.MountPoint, req.Data); err != nil {
		return errorResponse(err)
	}
	name := d.Get("name").(string)
	if err := checkRoleName(name); err != nil {
		return errorResponse(err)
	}
	if err := checkRoleInput(d); err != nil {
		return errorResponse(err)
	}
	lock := locksutil.LockForKey(b.roleLocks, name)
	lock.Lock()
	defer lock.Unlock()
	r, err := getRole(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if r == nil {
		r = &roleEntry{}
	}
	if v, ok := d.GetOk("scopes"); ok {
		r.Scopes = cleanScopes(v.([]string))
	}
	if err := validateScopes("scopes", r.Scopes); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	if v, ok := d.GetOk("ttl"); ok {
		r.TTL = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("audience"); ok {
		r.Audience = strings.TrimSpace(v.(string))
	}
	if v, ok := d.GetOk("resource"); ok {
		r.Resource = strings.TrimSpace(v.(string))
	}
	if v, ok := d.GetOk("token_per_lease"); ok {
		r.TokenPerLease = v.(bool)
	}
	if v, ok := d.GetOk("token_params"); ok {
		r.TokenParams = v.(map[string]string)
		for k := range r.TokenParams {
			if k == "" || slices.Contains(reservedTokenParams, k) {
				return logical.ErrorResponse("token_params cannot set %q; use the field for it or leave it to the grant (reserved: %s)",
					k, strings.Join(reservedTokenParams, ", ")), nil
			}
		}
		if len(r.TokenParams) == 0 {
			r.TokenParams = nil
		}
	}

	entry, err := logical.StorageEntryJSON(roleStoragePrefix+name, r)
	if err != nil {
		return nil, fmt.Errorf("encode role %q: %w", name, err)
	}
	// Forgotten whatever Put returned: a write that reports failure may
	// have committed (a deadline after the Raft apply), and the node must
	// then serve the role as storage holds it, not as it was.
	err = req.Storage.Put(ctx, entry)
	b.forgetRole(name)
	if err != nil {
		return nil, fmt.Errorf("store role %q: %w", name, err)
	}
	// Answer with the role rather than 204: the framework adds its warning
	// about unrecognized parameters, such as a misspelled field, only to a
	// response that is not nil.
	return &logical.Response{Data: r.data()}, nil
}

func (b *backend) pathRoleDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := checkRoleName(name); err != nil {
		return errorResponse(err)
	}
	lock := locksutil.LockForKey(b.roleLocks, name)
	lock.Lock()
	defer lock.Unlock()
	// As for a write: a delete that reports failure may have committed.
	err := req.Storage.Delete(ctx, roleStoragePrefix+name)
	b.forgetRole(name)
	if err != nil {
		return nil, fmt.Errorf("delete role %q: %w", name, err)
	}
	return nil, nil
}

// getRole reads a role from storage, nil when there is none.
func getRole(ctx context.Context, s logical.Storage, name string) (*roleEntry, error) {
	entry, err := s.Get(ctx, roleStoragePrefix+name)
	if err != nil {
		return nil, fmt.Errorf("read role %q: %w", name, err)
	}
	if entry == nil {
		return nil, nil
	}
	r := &roleEntry{}
	if err := entry.DecodeJSON(r); err != nil {
		return nil, fmt.Errorf("decode role %q: %w", name, err)
	}
	return r, nil
}

// role is getRole through the in-memory copy the creds path reads.
func (b *backend) role(ctx context.Context, s logical.Storage, name string) (*roleEntry, error) {
	b.mu.RLock()
	r, gen := b.roles[name], b.rolesGen
	b.mu.RUnlock()
	if r != nil {
		return r, nil
	}
	r, err := getRole(ctx, s, name)
	if err != nil || r == nil {
		return r, err
	}
	b.mu.Lock()
	// A write or invalidation since the read makes what was read stale.
	if b.rolesGen == gen {
		b.roles[name] = r
	}
	b.mu.Unlock()
	return r, nil
}

// forgetRole drops the in-memory role and the tokens cached for it.
func (b *backend) forgetRole(name string) {
	b.mu.Lock()
	delete(b.roles, name)
	b.rolesGen++
	b.mu.Unlock()
	b.tokens.dropRole(name)
	b.outages.forget(name)
}
