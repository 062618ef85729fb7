package payment_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/payment"
)

const twinsDir = `{"tenants":[
  {"slug":"paid","workerName":"w","priceUsd":"0.01","x402Enabled":true,"hosts":["a.example"]},
  {"slug":"twin","workerName":"w","priceUsd":"0.01","x402Enabled":true,"hosts":["b.example"]}]}`

func cloneHdr(h http.Header) http.Header { return h.Clone() }

// Host-routed twins (same payTo, price and path, so the same fingerprint):
// one authorization, spent every way at once, runs one worker once.
func TestOneAuthorizationAllWaysConcurrently(t *testing.T) {
	t.Parallel()
	for round := 0; round < 20; round++ {
		e := newEnv(t, nil)
		e.rebuild(rebuildOpts{kv: memory.NewKV(), dir: twinsDir})
		hdr := e.pay("http://a.example/rows?limit=2", 2, localfacilitator.SignOptions{})
		targets := []string{"http://a.example/rows?limit=2", "http://b.example/rows?limit=2",
			"http://gw.local/t/paid/rows?limit=2", "http://gw.local/t/twin/rows?limit=2"}
		keys := []string{"", "k1", "k2"}
		var wg sync.WaitGroup
		var mu sync.Mutex
		codes := map[int]int{}
		for _, tg := range targets {
			for _, k := range keys {
				for _, name := range []string{"X-Payment-Idempotency-Key", "Idempotency-Key"} {
					h := cloneHdr(hdr)
					if k != "" {
						h.Set(name, k)
					}
					wg.Add(1)
					go func(tg string, h http.Header) {
						defer wg.Done()
						rec := e.do(tg, h)
						assert.NotEqual(t, 500, rec.Code, rec.Body.String())
						mu.Lock()
						codes[rec.Code]++
						mu.Unlock()
					}(tg, h)
				}
			}
		}
		wg.Wait()
		require.LessOrEqual(t, e.calls.Load(), int64(1), "round %d: %v", round, codes)
		require.LessOrEqual(t, e.fac.settles.Load(), int64(1), "round %d", round)
	}
}

// A client key first (pointer at x402:auth), then the derived key and
// another client key at the host-routed twin: refused 422, never served.
func TestClientKeyThenTwinDerived(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.rebuild(rebuildOpts{kv: memory.NewKV(), dir: twinsDir})
	hdr := e.pay("http://a.example/rows?limit=2", 2, localfacilitator.SignOptions{})
	hdr.Set("Idempotency-Key", "mine")
	first := e.do("http://a.example/rows?limit=2", hdr)
	require.Equal(t, 200, first.Code, first.Body.String())
	hdr.Del("Idempotency-Key")
	again := e.do("http://a.example/rows?limit=2", hdr)
	require.Equal(t, 200, again.Code, again.Body.String())
	require.Equal(t, "true", again.Header().Get("X-Payment-Deduped"))
	for _, k := range []string{"", "other", "mine"} {
		h := cloneHdr(hdr)
		if k != "" {
			h.Set("X-Payment-Idempotency-Key", k)
		}
		rec := e.do("http://b.example/rows?limit=2", h)
		require.Contains(t, []int{402, 422}, rec.Code, "key %q: %s", k, rec.Body.String())
		require.NotContains(t, rec.Body.String(), `"data"`, "never another tenant's answer")
	}
	require.Equal(t, int64(1), e.calls.Load())
	require.Equal(t, int64(1), e.fac.settles.Load())
}

// An authorization record of the earlier layout whose record is gone: the
// payer's retry is refused 422 "already settled" (the ledger has it), not
// 409 "in use" for as long as the leftover lives.
func TestEarlierLayoutPointerWithoutRecord(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	store := memory.NewKV()
	e.rebuild(rebuildOpts{kv: store})
	ctx := context.Background()
	hdr := e.pay(target, 2, localfacilitator.SignOptions{})
	first := e.do(target, hdr)
	require.Equal(t, 200, first.Code)
	key := first.Header().Get(payment.HeaderIdempotencyKey)
	id := strings.TrimPrefix(key, x402.KeyPrefixAuthorization)
	// Earlier layout, record lost (evicted, expired in flight, or a failed
	// Set in store()): only the pointer is left.
	require.NoError(t, store.Delete(ctx, "x402:auth:"+id))
	require.NoError(t, store.Set(ctx, "x402:auth:"+id, []byte("paid "+key), time.Hour))
	again := e.do(target, hdr)
	require.Equal(t, 422, again.Code, "ledger knows it was settled; got: %s", again.Body.String())
	require.Equal(t, int64(1), e.calls.Load())
}

// Recover finds the outcome kept with a derived key's record of the
// earlier layout even when its authorization record is gone (an earlier
// version died between its two Sets and the pointer expired).
func TestRecoverEarlierLayoutRecordWithoutPointer(t *testing.T) {
	t.Parallel()
	lstore := memory.NewLedger()
	dying := &dyingLedger{Store: lstore, dead: true}
	e := newEnv(t, nil)
	kvs := memory.NewKV()
	e.rebuild(rebuildOpts{kv: kvs, lstore: dying})
	ctx := context.Background()
	hdr := e.pay(target, 2, localfacilitator.SignOptions{})
	rec := e.do(target, hdr)
	require.Equal(t, 200, rec.Code, rec.Body.String())
	key := rec.Header().Get(payment.HeaderIdempotencyKey)
	id := strings.TrimPrefix(key, x402.KeyPrefixAuthorization)

	// What the earlier version left: the record under the tenant, with
	// the outcome, and no pointer.
	raw, err := kvs.Get(ctx, "x402:auth:"+id)
	require.NoError(t, err)
	var old map[string]any
	require.NoError(t, json.Unmarshal(raw, &old))
	delete(old, "slug")
	raw, _ = json.Marshal(old)
	require.NoError(t, kvs.Delete(ctx, "x402:auth:"+id))
	require.NoError(t, kvs.Set(ctx, "x402:{paid}:key:"+key, raw, time.Hour))

	dying.dead = false
	rep, err := e.stage.Recover(ctx, 0)
	require.NoError(t, err)
	require.Len(t, rep.Recovered, 1)
	require.Equal(t, ledger.StatusSettled, rep.Recovered[0].Status, "the outcome kept with the record")
	require.NotEmpty(t, rep.Recovered[0].TxHash)
}

// Recover in both layouts with the pointer in place: settled, with its tx.
func TestRecoverBothLayouts(t *testing.T) {
	t.Parallel()
	for _, earlier := range []bool{false, true} {
		t.Run(fmt.Sprint("earlier=", earlier), func(t *testing.T) {
			lstore := memory.NewLedger()
			dying := &dyingLedger{Store: lstore, dead: true}
			e := newEnv(t, nil)
			kvs := memory.NewKV()
			e.rebuild(rebuildOpts{kv: kvs, lstore: dying})
			ctx := context.Background()
			rec := e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
			require.Equal(t, 200, rec.Code)
			key := rec.Header().Get(payment.HeaderIdempotencyKey)
			id := strings.TrimPrefix(key, x402.KeyPrefixAuthorization)
			if earlier {
				raw, err := kvs.Get(ctx, "x402:auth:"+id)
				require.NoError(t, err)
				require.NoError(t, kvs.Set(ctx, "x402:{paid}:key:"+key, raw, time.Hour))
				require.NoError(t, kvs.Set(ctx, "x402:auth:"+id, []byte("paid "+key), time.Hour))
			}
			dying.dead = false
			rep, err := e.stage.Recover(ctx, 0)
			require.NoError(t, err)
			require.Len(t, rep.Recovered, 1)
			require.Equal(t, ledger.StatusSettled, rep.Recovered[0].Status)
			require.NotEmpty(t, rep.Recovered[0].TxHash)
		})
	}
}
