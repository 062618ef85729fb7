package payment_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/payment"
)

// writeLog records the keys of a KV's writes.
type writeLog struct {
	kv.Store
	mu     sync.Mutex
	writes []string
}

func (w *writeLog) log(op, key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, op+" "+key)
}

func (w *writeLog) Set(ctx context.Context, key string, v []byte, ttl time.Duration) error {
	w.log("set", key)
	return w.Store.Set(ctx, key, v, ttl)
}

func (w *writeLog) SetNX(ctx context.Context, key string, v []byte, ttl time.Duration) (bool, error) {
	w.log("setnx", key)
	return w.Store.SetNX(ctx, key, v, ttl)
}

func (w *writeLog) idempotencyWrites() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, k := range w.writes {
		if strings.Contains(k, " x402:") {
			out = append(out, k)
		}
	}
	return out
}

// A key derived from the authorization keeps its record with the
// authorization: a paid request claims and stores one record, not a
// record and an authorization record pointing at it (each a random key in
// a store's index, the most expensive writes a paid request made on SQLite).
func TestDerivedKeyRecordIsTheAuthorizationRecord(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	log := &writeLog{Store: memory.NewKV()}
	e.rebuild(rebuildOpts{kv: log, dir: `{"tenants":[
	  {"slug":"paid","workerName":"w","priceUsd":"0.01","x402Enabled":true},
	  {"slug":"twin","workerName":"w","priceUsd":"0.01","x402Enabled":true}]}`})
	hdr := e.pay(target, 2, localfacilitator.SignOptions{})
	rec := e.do(target, hdr)
	require.Equal(t, 200, rec.Code, rec.Body.String())
	key := rec.Header().Get(payment.HeaderIdempotencyKey)
	id, ok := strings.CutPrefix(key, x402.KeyPrefixAuthorization)
	require.True(t, ok, key)
	require.Equal(t, []string{"setnx x402:auth:" + id, "set x402:auth:" + id}, log.idempotencyWrites())

	raw, err := log.Get(context.Background(), "x402:auth:"+id)
	require.NoError(t, err)
	var stored struct{ State, Slug, Key string }
	require.NoError(t, json.Unmarshal(raw, &stored))
	require.Equal(t, "done", stored.State)
	require.Equal(t, "paid", stored.Slug)
	require.Equal(t, key, stored.Key)

	// Replayed from it; refused for another request; a client key finds it.
	again := e.do(target, hdr)
	require.Equal(t, 200, again.Code)
	require.Equal(t, "true", again.Header().Get("X-Payment-Deduped"))
	require.Equal(t, 422, e.do("http://gw.local/t/paid/other", hdr).Code)
	twin := e.do("http://gw.local/t/twin/rows?limit=2", hdr)
	require.Equal(t, 422, twin.Code, "another tenant with the same payTo and price")
	require.Contains(t, twin.Body.String(), "another API")
	hdr.Set("X-Payment-Idempotency-Key", "mine")
	mine := e.do(target, hdr)
	require.Equal(t, 200, mine.Code)
	require.Equal(t, "true", mine.Header().Get("X-Payment-Deduped"))
	require.Equal(t, rec.Body.String(), mine.Body.String())
	require.Equal(t, int64(1), e.calls.Load())
	require.Equal(t, int64(1), e.fac.settles.Load())
}

// Records an earlier version wrote for a derived key (under the tenant,
// with an authorization record naming it) are still found: the payment is
// replayed, not verified and served again, and refused for another tenant.
func TestDerivedKeyRecordOfTheEarlierLayout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	store := memory.NewKV()
	e.rebuild(rebuildOpts{kv: store, dir: `{"tenants":[
	  {"slug":"paid","workerName":"w","priceUsd":"0.01","x402Enabled":true},
	  {"slug":"twin","workerName":"w","priceUsd":"0.01","x402Enabled":true}]}`})
	ctx := context.Background()
	hdr := e.pay(target, 2, localfacilitator.SignOptions{})
	first := e.do(target, hdr)
	require.Equal(t, 200, first.Code, first.Body.String())
	key := first.Header().Get(payment.HeaderIdempotencyKey)
	id := strings.TrimPrefix(key, x402.KeyPrefixAuthorization)

	// Move the record where the earlier version kept it.
	raw, err := store.Get(ctx, "x402:auth:"+id)
	require.NoError(t, err)
	var old map[string]any
	require.NoError(t, json.Unmarshal(raw, &old))
	delete(old, "slug")
	raw, _ = json.Marshal(old)
	require.NoError(t, store.Set(ctx, "x402:{paid}:key:"+key, raw, time.Hour))
	require.NoError(t, store.Set(ctx, "x402:auth:"+id, []byte("paid "+key), time.Hour))

	again := e.do(target, hdr)
	require.Equal(t, 200, again.Code, again.Body.String())
	require.Equal(t, "true", again.Header().Get("X-Payment-Deduped"))
	require.Equal(t, first.Body.String(), again.Body.String())
	hdr.Set("X-Payment-Idempotency-Key", "mine")
	mine := e.do(target, hdr)
	require.Equal(t, 200, mine.Code, mine.Body.String())
	require.Equal(t, "true", mine.Header().Get("X-Payment-Deduped"))
	hdr.Del("X-Payment-Idempotency-Key")
	twin := e.do("http://gw.local/t/twin/rows?limit=2", hdr)
	require.Equal(t, 422, twin.Code, twin.Body.String())
	require.Contains(t, twin.Body.String(), "another API")
	require.Equal(t, int64(1), e.calls.Load())
	require.Equal(t, int64(1), e.fac.verifies.Load())
}
