package ops_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/ops"
	"github.com/402claw/dispatcher/tenant"
)

const adminToken = "admin-secret"

// memTenants is a tenant.Store in memory; with tx set it also offers
// ops.TenantUpdater.
type memTenants struct {
	mu    sync.Mutex
	ts    []tenant.Tenant
	saves int
	delay time.Duration // between load and save of a plain read-modify-write
}

func (s *memTenants) LoadTenants(ctx context.Context) ([]tenant.Tenant, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]tenant.Tenant(nil), s.ts...), nil
}

func (s *memTenants) SaveTenants(ctx context.Context, ts []tenant.Tenant) error {
	if _, err := tenant.NewDirectory(ts); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ts = append([]tenant.Tenant(nil), ts...)
	s.saves++
	return nil
}

// txTenants adds the transactional update.
type txTenants struct{ memTenants }

func (s *txTenants) UpdateTenants(ctx context.Context, fn func([]tenant.Tenant) ([]tenant.Tenant, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next, err := fn(append([]tenant.Tenant(nil), s.ts...))
	if err != nil {
		return err
	}
	s.ts = next
	s.saves++
	return nil
}

type fixture struct {
	h        *ops.AdminHandler
	registry *tenant.Registry
	store    tenant.Store
	ledger   *ledger.Ledger
	lstore   *memory.Ledger
	users    *memory.Users
	datasets *memory.Datasets
}

func newFixture(t *testing.T, store tenant.Store) *fixture {
	t.Helper()
	f := &fixture{registry: tenant.NewRegistry(nil), store: store, lstore: memory.NewLedger(), users: memory.NewUsers(), datasets: memory.NewDatasets()}
	var err error
	f.ledger, err = ledger.New(f.lstore, ledger.Config{})
	require.NoError(t, err)
	acc, err := ops.NewAccounts(f.users, ops.AccountsConfig{})
	require.NoError(t, err)
	f.h, err = ops.NewAdminHandler(ops.AdminConfig{
		AdminToken: adminToken, Registry: f.registry, Store: store, Ledger: f.ledger,
		Accounts: acc, Datasets: f.datasets, MaxDatasetSize: 4096,
		Next: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(299) }),
	})
	require.NoError(t, err)
	return f
}

// do sends one request and returns the status and decoded JSON body.
func (f *fixture) do(t *testing.T, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	return do(t, f.h, method, path, token, body)
}

func do(t *testing.T, h http.Handler, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out map[string]any
	if rec.Body.Len() > 0 {
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out), "body %q", rec.Body.String())
	}
	if rec.Code >= 400 {
		require.Equal(t, false, out["ok"], "error body %v", out)
		require.NotEmpty(t, out["error"])
		require.NotEmpty(t, out["requestId"])
		require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	}
	return rec.Code, out
}

// owner makes a user and a key through the API and returns the key.
func (f *fixture) owner(t *testing.T, id string) string {
	t.Helper()
	code, _ := f.do(t, "POST", "/__platform/users", adminToken, fmt.Sprintf(`{"id":%q,"name":"Owner %s"}`, id, id))
	require.Equal(t, 201, code)
	code, out := f.do(t, "POST", "/__platform/users/"+id+"/keys", adminToken, "")
	require.Equal(t, 201, code)
	key, _ := out["key"].(string)
	require.True(t, strings.HasPrefix(key, ops.KeyPrefix), "key %q", key)
	require.NotEmpty(t, out["id"])
	return key
}

func (f *fixture) audits(t *testing.T) []ledger.AuditRecord {
	t.Helper()
	rs, err := f.ledger.AuditLog(context.Background(), ledger.ListAuditParams{})
	require.NoError(t, err)
	return rs
}

func TestAdminAuth(t *testing.T) {
	f := newFixture(t, &memTenants{})
	for _, tc := range []struct{ method, path, token string }{
		{"GET", "/__platform/tenants", ""},
		{"GET", "/__platform/tenants", "wrong"},
		{"PUT", "/__platform/tenants/a", ""},
		{"DELETE", "/__platform/tenants/a", "claw_nope"},
		{"POST", "/__platform/users", ""},
		{"GET", "/__platform/ledger/verify", ""},
	} {
		code, out := f.do(t, tc.method, tc.path, tc.token, `{}`)
		require.Equal(t, 401, code, "%s %s", tc.method, tc.path)
		require.Equal(t, "unauthorized", out["error"])
	}
	// Routes the handler does not own go to Next.
	code, _ := f.do(t, "GET", "/__platform/health", "", "")
	require.Equal(t, 299, code)
	// An owner's key is not the admin's.
	key := f.owner(t, "u-1")
	code, out := f.do(t, "POST", "/__platform/users", key, `{"id":"u-2"}`)
	require.Equal(t, 403, code)
	require.Equal(t, "forbidden", out["error"])
	code, _ = f.do(t, "GET", "/__platform/ledger/verify", key, "")
	require.Equal(t, 403, code)
	code, _ = f.do(t, "POST", "/__platform/tenants", adminToken, "")
	require.Equal(t, 405, code)
}

func TestAdminPutGetDeleteTenant(t *testing.T) {
	store := &memTenants{}
	f := newFixture(t, store)
	code, out := f.do(t, "PUT", "/__platform/tenants/acme", adminToken,
		`{"workerName":"w-acme","priceUsd":"0.01","x402Enabled":true,"ownerUserId":"u-9","hosts":["Acme.Example.com"]}`)
	require.Equal(t, 201, code, "%v", out)
	require.Equal(t, "acme", out["slug"], "the path's slug is taken")
	require.Equal(t, "u-9", out["ownerUserId"], "the admin sets the owner from the body")

	got, ok := f.registry.Load().Lookup("acme")
	require.True(t, ok, "not swapped in")
	require.Equal(t, "0.01", got.PriceUSD.String())
	require.Len(t, store.ts, 1, "not saved")
	res, err := f.registry.Load().Resolve("acme.example.com", "/x")
	require.NoError(t, err)
	require.Equal(t, "acme", res.Tenant.Slug)

	// Replace: 200.
	code, out = f.do(t, "PUT", "/__platform/tenants/acme", adminToken, `{"slug":"acme","workerName":"w-acme-2"}`)
	require.Equal(t, 200, code, "%v", out)
	got, _ = f.registry.Load().Lookup("acme")
	require.Equal(t, "w-acme-2", got.WorkerName)

	code, out = f.do(t, "GET", "/__platform/tenants", adminToken, "")
	require.Equal(t, 200, code)
	require.Len(t, out["tenants"], 1)
	code, out = f.do(t, "GET", "/__platform/tenants/acme", adminToken, "")
	require.Equal(t, 200, code)
	require.Equal(t, "w-acme-2", out["workerName"])

	code, out = f.do(t, "DELETE", "/__platform/tenants/acme", adminToken, "")
	require.Equal(t, 200, code, "%v", out)
	_, ok = f.registry.Load().Lookup("acme")
	require.False(t, ok)
	require.Empty(t, store.ts)
	code, out = f.do(t, "DELETE", "/__platform/tenants/acme", adminToken, "")
	require.Equal(t, 404, code)
	require.Equal(t, "not_found", out["error"])

	// Three changes, three audit records, each naming slug, change and actor.
	recs := f.audits(t)
	require.Len(t, recs, 3)
	var ops3 []string
	for _, r := range recs {
		require.Equal(t, ledger.KindDirectorySwap, r.Kind)
		require.Equal(t, "acme", r.Tenant)
		var data map[string]any
		require.NoError(t, json.Unmarshal(r.Data, &data))
		require.Equal(t, "admin", data["by"])
		require.Equal(t, "acme", data["slug"])
		require.Equal(t, r.Subject, data["version"])
		ops3 = append(ops3, data["op"].(string))
	}
	require.Equal(t, []string{"put", "put", "delete"}, ops3)
	var first map[string]any
	require.NoError(t, json.Unmarshal(recs[0].Data, &first))
	require.Equal(t, "w-acme", first["tenant"].(map[string]any)["workerName"], "the change is in the record")
	n, err := f.ledger.Verify(context.Background())
	require.NoError(t, err)
	require.Equal(t, int64(3), n)
}

func TestAdminInvalidChangeChangesNothing(t *testing.T) {
	store := &memTenants{}
	f := newFixture(t, store)
	code, _ := f.do(t, "PUT", "/__platform/tenants/a", adminToken, `{"workerName":"w","hosts":["a.example.com"]}`)
	require.Equal(t, 201, code)
	before := f.registry.Load()
	for _, tc := range []struct{ slug, body, field string }{
		{"b", `{"workerName":"w","hosts":["a.example.com"]}`, "hosts"}, // duplicate host across the directory
		{"b", `{"workerName":"w","priceUsd":"-1"}`, "priceUsd"},
		{"b", `{"workerName":"w","priceUsd":"0.0000001"}`, "priceUsd"},
		{"b", `{"priceUsd":"1"}`, "workerName"},
		{"b", `{"slug":"c","workerName":"w"}`, "slug"},
		{"b", `{"workerName":"w","payTo":"0x12"}`, "payTo"},
		{"b", `{"workerName":"w","rateLimit":{"perCaller":{"requests":-1,"windowSeconds":1}}}`, "rateLimit.perCaller"},
	} {
		code, out := f.do(t, "PUT", "/__platform/tenants/"+tc.slug, adminToken, tc.body)
		require.Equal(t, 400, code, tc.body)
		require.Equal(t, "bad_request", out["error"])
		require.Contains(t, out["message"], tc.field, tc.body)
	}
	for _, body := range []string{``, `[]`, `{"workerName":"w"} {}`, `{"workerName":"w"}],"byHost":{"x":{}}`, `nope`} {
		code, out := f.do(t, "PUT", "/__platform/tenants/b", adminToken, body)
		require.Equal(t, 400, code, body)
		require.Equal(t, "bad_request", out["error"])
	}
	code, _ = f.do(t, "PUT", "/__platform/tenants/Bad_Slug", adminToken, `{"workerName":"w"}`)
	require.Equal(t, 400, code)
	require.Same(t, before, f.registry.Load(), "a refused change swapped the directory")
	require.Equal(t, 1, store.saves, "a refused change was saved")
	require.Len(t, f.audits(t), 1, "a refused change was audited")
	// Too large a body.
	code, out := f.do(t, "PUT", "/__platform/tenants/b", adminToken, `{"workerName":"`+strings.Repeat("w", ops.MaxTenantBody)+`"}`)
	require.Equal(t, 413, code)
	require.Equal(t, "request_too_large", out["error"])
}

func TestOwnerManagesOnlyOwnTenants(t *testing.T) {
	f := newFixture(t, &memTenants{})
	alice, bob := f.owner(t, "alice"), f.owner(t, "bob")

	// Workers are assigned by the admin; owners then manage their tenants.
	code, out := f.do(t, "PUT", "/__platform/tenants/a-api", adminToken, `{"workerName":"w-a","ownerUserId":"alice"}`)
	require.Equal(t, 201, code, "%v", out)
	code, out = f.do(t, "PUT", "/__platform/tenants/b-api", adminToken, `{"workerName":"w-b","ownerUserId":"bob"}`)
	require.Equal(t, 201, code, "%v", out)
	code, out = f.do(t, "PUT", "/__platform/tenants/a-api", alice, `{"workerName":"w-a","ownerUserId":"bob","priceUsd":"0.1"}`)
	require.Equal(t, 200, code, "%v", out)
	require.Equal(t, "alice", out["ownerUserId"], "ownerUserId comes from the key, never the body")
	code, out = f.do(t, "PUT", "/__platform/tenants/b-api", bob, `{"workerName":"w-b","owner":"alice"}`)
	require.Equal(t, 200, code, "%v", out)
	require.Equal(t, "bob", out["ownerUserId"])
	// A worker the admin did not assign (another owner's backend, perhaps,
	// before its tenant exists) is refused.
	code, _ = f.do(t, "PUT", "/__platform/tenants/b-new", bob, `{"workerName":"w-not-yet-alices"}`)
	require.Equal(t, 403, code)
	// Plans and limit overrides are the platform's: an owner keeps them.
	code, _ = f.do(t, "PUT", "/__platform/tenants/b-api", adminToken, `{"workerName":"w-b","ownerUserId":"bob","plan":"quarantine"}`)
	require.Equal(t, 200, code)
	code, out = f.do(t, "PUT", "/__platform/tenants/b-api", bob, `{"workerName":"w-b","plan":"enterprise","limits":{"cpuMs":600},"rateLimit":{"perCaller":{"requests":1000000,"windowSeconds":1}}}`)
	require.Equal(t, 200, code, "%v", out)
	b, _ := f.registry.Load().Lookup("b-api")
	require.Equal(t, "quarantine", b.Plan)
	require.Zero(t, b.Limits.CPUMs)
	require.True(t, b.RateLimit.PerCaller.IsZero())

	// Bob may not change, delete or read Alice's tenant.
	code, out = f.do(t, "PUT", "/__platform/tenants/a-api", bob, `{"workerName":"w-b"}`)
	require.Equal(t, 403, code)
	require.Equal(t, "forbidden", out["error"])
	code, _ = f.do(t, "DELETE", "/__platform/tenants/a-api", bob, "")
	require.Equal(t, 403, code)
	code, _ = f.do(t, "GET", "/__platform/tenants/a-api", bob, "")
	require.Equal(t, 403, code)
	// Nor borrow Alice's worker for a tenant of his own.
	code, _ = f.do(t, "PUT", "/__platform/tenants/b-2", bob, `{"workerName":"w-a"}`)
	require.Equal(t, 403, code)
	a, _ := f.registry.Load().Lookup("a-api")
	require.Equal(t, "w-a", a.WorkerName)

	// Hosts are the admin's: an owner can neither claim one nor drop one.
	code, _ = f.do(t, "PUT", "/__platform/tenants/b-3", bob, `{"workerName":"w-b3","hosts":["127.0.0.1"]}`)
	require.Equal(t, 403, code, "an owner claimed a host")
	code, _ = f.do(t, "PUT", "/__platform/tenants/b-api", adminToken, `{"workerName":"w-b","ownerUserId":"bob","hosts":["b.example.com"]}`)
	require.Equal(t, 200, code)
	code, out = f.do(t, "PUT", "/__platform/tenants/b-api", bob, `{"workerName":"w-b","priceUsd":"0.5"}`)
	require.Equal(t, 200, code, "%v", out)
	require.Equal(t, []any{"b.example.com"}, out["hosts"], "an owner's change dropped the admin's host")
	code, _ = f.do(t, "PUT", "/__platform/tenants/b-api", bob, `{"workerName":"w-b","hosts":["evil.example.com"]}`)
	require.Equal(t, 403, code)

	code, out = f.do(t, "GET", "/__platform/tenants", bob, "")
	require.Equal(t, 200, code)
	list := out["tenants"].([]any)
	require.Len(t, list, 1, "an owner lists only their tenants")
	require.Equal(t, "b-api", list[0].(map[string]any)["slug"])
	code, out = f.do(t, "GET", "/__platform/tenants", adminToken, "")
	require.Equal(t, 200, code)
	require.Len(t, out["tenants"], 2)

	code, _ = f.do(t, "DELETE", "/__platform/tenants/b-api", bob, "")
	require.Equal(t, 200, code)
	// The audit trail names who made each change.
	var by []string
	for _, r := range f.audits(t) {
		var data map[string]any
		require.NoError(t, json.Unmarshal(r.Data, &data))
		by = append(by, data["by"].(string))
	}
	require.Equal(t, []string{"admin", "admin", "user:alice", "user:bob", "admin", "user:bob", "admin", "user:bob", "user:bob"}, by)
}

func TestRevokedKeyStopsAtOnceOnEveryReplica(t *testing.T) {
	// Two replicas: separate handlers over one users store.
	store := &txTenants{}
	a := newFixture(t, store)
	acc, err := ops.NewAccounts(a.users, ops.AccountsConfig{})
	require.NoError(t, err)
	b, err := ops.NewAdminHandler(ops.AdminConfig{AdminToken: adminToken, Registry: tenant.NewRegistry(nil), Store: store, Ledger: a.ledger, Accounts: acc})
	require.NoError(t, err)

	key := a.owner(t, "alice")
	code, _ := do(t, b, "GET", "/__platform/tenants", key, "")
	require.Equal(t, 200, code)
	// The key's id, from the store.
	k, err := acc.Authenticate(context.Background(), key)
	require.NoError(t, err)
	code, out := a.do(t, "DELETE", "/__platform/keys/"+k.ID, adminToken, "")
	require.Equal(t, 200, code, "%v", out)
	for _, h := range []http.Handler{a.h, b} {
		code, out := do(t, h, "GET", "/__platform/tenants", key, "")
		require.Equal(t, 401, code)
		require.Equal(t, "unauthorized", out["error"])
	}
	code, _ = a.do(t, "DELETE", "/__platform/keys/"+k.ID+"x", adminToken, "")
	require.Equal(t, 404, code)
	code, _ = a.do(t, "POST", "/__platform/users/nobody/keys", adminToken, "")
	require.Equal(t, 404, code)
	code, out = a.do(t, "POST", "/__platform/users", adminToken, `{"id":"alice"}`)
	require.Equal(t, 409, code)
	require.Equal(t, "conflict", out["error"])
	code, _ = a.do(t, "POST", "/__platform/users", adminToken, `{"id":"has space"}`)
	require.Equal(t, 400, code)
}

func TestConcurrentChangesAreSerialized(t *testing.T) {
	store := &memTenants{}
	f := newFixture(t, store)
	const n = 40
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			req := httptest.NewRequest("PUT", fmt.Sprintf("/__platform/tenants/t%d", i), strings.NewReader(`{"workerName":"w"}`))
			req.Header.Set("Authorization", "Bearer "+adminToken)
			rec := httptest.NewRecorder()
			f.h.ServeHTTP(rec, req)
			if rec.Code != 201 {
				t.Errorf("put t%d: %d %s", i, rec.Code, rec.Body)
			}
		}(i)
	}
	wg.Wait()
	require.Equal(t, n, f.registry.Load().Len(), "a change was lost in the registry")
	require.Len(t, store.ts, n, "a change was lost in the store")
	require.Equal(t, n, store.saves)
	require.Len(t, f.audits(t), n)
	_, err := f.ledger.Verify(context.Background())
	require.NoError(t, err)
}

func TestReplicasWithTransactionalStoreLoseNoChange(t *testing.T) {
	store := &txTenants{}
	const replicas, per = 4, 15
	var hs []*fixture
	for i := 0; i < replicas; i++ {
		hs = append(hs, newFixture(t, store))
	}
	var wg sync.WaitGroup
	for r := 0; r < replicas; r++ {
		for i := 0; i < per; i++ {
			wg.Add(1)
			go func(r, i int) {
				defer wg.Done()
				code, _ := hs[r].do(t, "PUT", fmt.Sprintf("/__platform/tenants/r%d-t%d", r, i), adminToken, `{"workerName":"w"}`)
				if code != 201 {
					t.Errorf("replica %d put %d: %d", r, i, code)
				}
			}(r, i)
		}
	}
	wg.Wait()
	require.Len(t, store.ts, replicas*per, "a replica's change was lost")
}

func TestReplicasWithPlainStoreLastWriterWins(t *testing.T) {
	// Documented rule for a tenant.Store without TenantUpdater: each
	// change reads, edits and saves the whole directory, so when two
	// replicas interleave, the later save wins whole.
	store := &memTenants{}
	a, b := newFixture(t, store), newFixture(t, store)
	gate := make(chan struct{})
	slow := &gatedStore{memTenants: store, gate: gate}
	a.h = mustHandler(t, a, slow)
	done := make(chan int)
	go func() {
		code, _ := a.do(t, "PUT", "/__platform/tenants/from-a", adminToken, `{"workerName":"w"}`)
		done <- code
	}()
	<-slow.loaded // a has read the (empty) directory
	code, _ := b.do(t, "PUT", "/__platform/tenants/from-b", adminToken, `{"workerName":"w"}`)
	require.Equal(t, 201, code)
	close(gate)
	require.Equal(t, 201, <-done)
	ts, _ := store.LoadTenants(context.Background())
	require.Len(t, ts, 1)
	require.Equal(t, "from-a", ts[0].Slug, "the last save wins whole")
}

// gatedStore holds the first save until gate closes, after signalling that
// the load happened.
type gatedStore struct {
	*memTenants
	gate   chan struct{}
	loaded chan struct{}
	once   sync.Once
}

func (s *gatedStore) LoadTenants(ctx context.Context) ([]tenant.Tenant, error) {
	ts, err := s.memTenants.LoadTenants(ctx)
	s.once.Do(func() { close(s.loaded) })
	return ts, err
}

func (s *gatedStore) SaveTenants(ctx context.Context, ts []tenant.Tenant) error {
	<-s.gate
	return s.memTenants.SaveTenants(ctx, ts)
}

func mustHandler(t *testing.T, f *fixture, store tenant.Store) *ops.AdminHandler {
	t.Helper()
	if gs, ok := store.(*gatedStore); ok && gs.loaded == nil {
		gs.loaded = make(chan struct{})
	}
	h, err := ops.NewAdminHandler(ops.AdminConfig{AdminToken: adminToken, Registry: f.registry, Store: store, Ledger: f.ledger})
	require.NoError(t, err)
	return h
}

func TestPaymentStatus(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	e := ledger.Entry{
		IdempotencyKey: "auth:0x" + strings.Repeat("ab", 32), Tenant: "acme", Payer: "0xpayer",
		Amount: "0.01", AmountAtomic: "10000", Asset: "0xusdc", Network: "eip155:84532", PayTo: "0xpayto",
		TxHash: "0xtx", Status: ledger.StatusSettled, RequestID: "r", Resource: "http://x/t/acme/",
	}
	_, _, err := f.ledger.RecordSettlement(ctx, e)
	require.NoError(t, err)
	e2 := e
	e2.IdempotencyKey, e2.TxHash = "my-key", "0xtx2"
	_, _, err = f.ledger.RecordSettlement(ctx, e2)
	require.NoError(t, err)

	for _, key := range []string{"auth:0x" + strings.Repeat("ab", 32), "0x" + strings.Repeat("ab", 32), "auth%3A0x" + strings.Repeat("ab", 32)} {
		code, out := f.do(t, "GET", "/__platform/payments/"+key, "", "")
		require.Equal(t, 200, code, key)
		require.Equal(t, "settled", out["status"])
		require.Equal(t, "0.01", out["amount"])
		require.Equal(t, "0xtx", out["transaction"])
		require.Equal(t, "eip155:84532", out["network"])
		require.Equal(t, "acme", out["tenant"])
		require.NotEmpty(t, out["time"])
		require.Nil(t, out["payer"], "the status does not leak the payer")
	}
	e3 := e
	e3.IdempotencyKey, e3.TxHash, e3.Tenant = "hdr:client-key-1", "0xtx3", "zeta"
	_, _, err = f.ledger.RecordSettlement(ctx, e3)
	require.NoError(t, err)
	code, out := f.do(t, "GET", "/__platform/payments/client-key-1", "", "")
	require.Equal(t, 200, code, "the Idempotency-Key a client sent finds its payment")
	require.Equal(t, "0xtx3", out["transaction"])
	require.Equal(t, "hdr:client-key-1", out["idempotencyKey"])

	code, out = f.do(t, "GET", "/__platform/payments/my-key?tenant=acme", "", "")
	require.Equal(t, 200, code)
	require.Equal(t, "0xtx2", out["transaction"])
	code, _ = f.do(t, "GET", "/__platform/payments/my-key?tenant=other", "", "")
	require.Equal(t, 404, code)
	code, out = f.do(t, "GET", "/__platform/payments/unknown", "", "")
	require.Equal(t, 404, code)
	require.Equal(t, "not_found", out["error"])
	code, _ = f.do(t, "GET", "/__platform/payments/"+strings.Repeat("k", ledger.MaxKeyLen+1), "", "")
	require.Equal(t, 400, code)
	code, _ = f.do(t, "GET", "/__platform/payments/", "", "")
	require.Equal(t, 400, code, "an empty key")
	code, _ = f.do(t, "GET", "/__platform/payments/a%00b", "", "")
	require.Equal(t, 400, code)
	code, _ = f.do(t, "POST", "/__platform/payments/my-key", "", "")
	require.Equal(t, 405, code)
}

func TestLedgerVerifyRoute(t *testing.T) {
	f := newFixture(t, nil)
	code, _ := f.do(t, "PUT", "/__platform/tenants/a", adminToken, `{"workerName":"w"}`)
	require.Equal(t, 201, code)
	code, out := f.do(t, "GET", "/__platform/ledger/verify", adminToken, "")
	require.Equal(t, 200, code)
	require.Equal(t, true, out["ok"])
	require.Equal(t, float64(1), out["records"])
}

func TestDatasetRoutes(t *testing.T) {
	f := newFixture(t, nil)
	alice, bob := f.owner(t, "alice"), f.owner(t, "bob")
	csv := "id,name,pop\n1,Tokyo,37400068\n2,Delhi,28514000\n"
	code, out := f.do(t, "PUT", "/__platform/datasets/cities", alice, csv)
	require.Equal(t, 201, code, "%v", out)
	require.Equal(t, float64(2), out["rows"])
	require.Equal(t, []any{"id", "name", "pop"}, out["columns"])
	require.Equal(t, "alice", out["ownerUserId"])
	code, _ = f.do(t, "PUT", "/__platform/datasets/cities", alice, csv+"3,Paris,11000000\n")
	require.Equal(t, 200, code)
	code, _ = f.do(t, "PUT", "/__platform/datasets/cities", bob, csv)
	require.Equal(t, 403, code, "bob overwrote alice's data set")
	code, _ = f.do(t, "GET", "/__platform/datasets/cities", bob, "")
	require.Equal(t, 403, code)
	code, out = f.do(t, "PUT", "/__platform/datasets/bad", alice, "a,a\n1,2\n")
	require.Equal(t, 400, code)
	require.Contains(t, out["message"], "twice")
	code, _ = f.do(t, "PUT", "/__platform/datasets/bad", alice, "a,b\n1,2,3\n")
	require.Equal(t, 400, code)
	code, out = f.do(t, "PUT", "/__platform/datasets/big", alice, "a\n"+strings.Repeat("1\n", 4096))
	require.Equal(t, 413, code)
	require.Equal(t, "request_too_large", out["error"])

	// A csv: tenant needs an existing data set of its owner.
	code, out = f.do(t, "PUT", "/__platform/tenants/cities", bob, `{"workerName":"csv:cities"}`)
	require.Equal(t, 403, code, "%v", out)
	code, out = f.do(t, "PUT", "/__platform/tenants/nodata", alice, `{"workerName":"csv:nodata"}`)
	require.Equal(t, 400, code)
	require.Contains(t, out["message"], "workerName")
	code, out = f.do(t, "PUT", "/__platform/tenants/cities", alice, `{"workerName":"csv:cities","priceUsd":"0.001","x402Enabled":true}`)
	require.Equal(t, 201, code, "%v", out)
	code, out = f.do(t, "DELETE", "/__platform/datasets/cities", alice, "")
	require.Equal(t, 409, code, "deleted a data set a tenant serves")
	require.Equal(t, "conflict", out["error"])
	code, _ = f.do(t, "DELETE", "/__platform/tenants/cities", alice, "")
	require.Equal(t, 200, code)
	code, _ = f.do(t, "DELETE", "/__platform/datasets/cities", alice, "")
	require.Equal(t, 200, code)
	code, _ = f.do(t, "GET", "/__platform/datasets/cities", alice, "")
	require.Equal(t, 404, code)
}

func TestWatchPicksUpAnotherReplicasChange(t *testing.T) {
	store := &memTenants{}
	a, b := newFixture(t, store), newFixture(t, store)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.h.Watch(ctx, ops.WatchConfig{Interval: 20 * time.Millisecond}) }()

	code, _ := a.do(t, "PUT", "/__platform/tenants/new", adminToken, `{"workerName":"w"}`)
	require.Equal(t, 201, code)
	require.Eventually(t, func() bool { _, ok := b.registry.Load().Lookup("new"); return ok }, 2*time.Second, 5*time.Millisecond)
	code, _ = a.do(t, "DELETE", "/__platform/tenants/new", adminToken, "")
	require.Equal(t, 200, code)
	require.Eventually(t, func() bool { return b.registry.Load().Len() == 0 }, 2*time.Second, 5*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
}

func TestWatchKeepsDirectoryWhenStoreFails(t *testing.T) {
	d, err := tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"a","workerName":"w"}]}`))
	require.NoError(t, err)
	reg := tenant.NewRegistry(d)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	require.NoError(t, ops.Watch(ctx, failingStore{}, reg, 10*time.Millisecond))
	require.Same(t, d, reg.Load())
}

type failingStore struct{}

func (failingStore) LoadTenants(context.Context) ([]tenant.Tenant, error) {
	return nil, io.ErrUnexpectedEOF
}
func (failingStore) SaveTenants(context.Context, []tenant.Tenant) error { return io.ErrUnexpectedEOF }

func TestAdminValidateHookRejectsWhole(t *testing.T) {
	store := &memTenants{}
	f := newFixture(t, store)
	h, err := ops.NewAdminHandler(ops.AdminConfig{AdminToken: adminToken, Registry: f.registry, Store: store, Ledger: f.ledger,
		Validate: func(d *tenant.Directory) error {
			for _, t := range d.Tenants() {
				if t.WorkerName == "forbidden-worker" {
					return fmt.Errorf("tenant %q: field \"workerName\": no such worker here", t.Slug)
				}
			}
			return nil
		}})
	require.NoError(t, err)
	code, out := do(t, h, "PUT", "/__platform/tenants/x", adminToken, `{"workerName":"forbidden-worker"}`)
	require.Equal(t, 400, code)
	require.Contains(t, out["message"], "workerName")
	require.Equal(t, 0, f.registry.Load().Len())
	require.Equal(t, 0, store.saves)
	code, _ = do(t, h, "PUT", "/__platform/tenants/x", adminToken, `{"workerName":"ok"}`)
	require.Equal(t, 201, code)
}
