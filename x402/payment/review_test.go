package payment_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/exact"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/payment"
)

// rebuildOpts replaces parts of an env built by newEnv.
type rebuildOpts struct {
	lstore ledger.Store
	kv     kv.Store
	mutate func(*payment.Config)
	events dispatch.EventSink
	worker http.Handler
	// fetcher replaces the in-process worker fetcher.
	fetcher dispatch.Fetcher
	// stages wraps the payment stage into the pipeline (nil: it alone).
	stages func(pay *payment.Stage) []dispatch.Stage
	dir    string
}

// rebuild rebuilds e's ledger, stage and dispatcher with o, keeping its
// facilitator, fake spend reserver, signer and default worker.
func (e *env) rebuild(o rebuildOpts) {
	e.t.Helper()
	var err error
	if o.lstore == nil {
		o.lstore = memory.NewLedger()
	}
	e.lstore = o.lstore
	e.ledger, err = ledger.New(o.lstore, ledger.Config{})
	require.NoError(e.t, err)
	if o.kv == nil {
		o.kv = memory.NewKV()
	}
	cfg := payment.Config{Facilitator: e.fac, KV: o.kv, Ledger: e.ledger, Meter: e.spend, PayTo: payTo, MaxResponseBytes: 1 << 10}
	if o.mutate != nil {
		o.mutate(&cfg)
	}
	e.stage, err = payment.NewStage(cfg)
	require.NoError(e.t, err)
	if o.dir != "" {
		e.dir, err = tenant.ParseDirectory([]byte(o.dir))
		require.NoError(e.t, err)
	}
	worker := o.worker
	if worker == nil {
		worker = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			e.calls.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(int(e.status.Load()))
			fmt.Fprintf(w, `{"data":%q}`, r.URL.Path)
		})
	}
	var fetcher dispatch.Fetcher = dispatch.NewHandlerFetcher(map[string]http.Handler{"w": worker})
	if o.fetcher != nil {
		fetcher = o.fetcher
	}
	stages := []dispatch.Stage{e.stage}
	if o.stages != nil {
		stages = o.stages(e.stage)
	}
	e.d, err = dispatch.NewDispatcher(dispatch.Config{
		Tenants: tenant.NewRegistry(e.dir),
		Fetcher: fetcher,
		Stages:  stages,
		Events:  o.events,
	})
	require.NoError(e.t, err)
}

// Bug: a payment first sent without a client key (derived key) and then
// again under X-Payment-Idempotency-Key was verified and served a second
// time (and answered 402 nonce_used by the facilitator after the worker ran)
// instead of being replayed or refused 422: the derived key wrote no
// authorization record for the second key to find.
func TestDerivedKeyThenClientKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	hdr := e.pay(target, 2, localfacilitator.SignOptions{})
	first := e.do(target, hdr)
	require.Equal(t, 200, first.Code, first.Body.String())
	require.True(t, strings.HasPrefix(first.Header().Get(payment.HeaderIdempotencyKey), x402.KeyPrefixAuthorization))

	hdr.Set("X-Payment-Idempotency-Key", "later-key")
	again := e.do(target, hdr)
	require.Equal(t, 200, again.Code, again.Body.String())
	require.Equal(t, "true", again.Header().Get("X-Payment-Deduped"))
	require.Equal(t, first.Body.String(), again.Body.String())
	require.Equal(t, first.Header().Get("PAYMENT-RESPONSE"), again.Header().Get("PAYMENT-RESPONSE"))

	other := e.do("http://gw.local/t/paid/other", hdr)
	require.Equal(t, 422, other.Code, other.Body.String())
	require.Contains(t, other.Body.String(), "idempotency_key_reused")

	require.Equal(t, int64(1), e.calls.Load(), "the worker ran once")
	require.Equal(t, int64(1), e.fac.verifies.Load())
	require.Equal(t, int64(1), e.fac.settles.Load())
	require.Len(t, e.entries(), 1)
}

// The same, concurrently: one payment under many different keys (and none)
// is served once; every other answer is a replay or a 409.
func TestOneAuthorizationManyKeysConcurrently(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	base := e.pay(target, 2, localfacilitator.SignOptions{})
	const n = 40
	recs := make([]*httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := base.Clone()
			if i%2 == 1 {
				h.Set("X-Payment-Idempotency-Key", fmt.Sprintf("key-%d", i))
			}
			<-start
			recs[i] = e.do(target, h)
		}()
	}
	close(start)
	wg.Wait()
	served := 0
	for _, rec := range recs {
		switch {
		case rec.Code == 200 && rec.Header().Get("X-Payment-Deduped") == "":
			served++
		case rec.Code == 200, rec.Code == 409:
		default:
			t.Fatalf("unexpected answer %d %s", rec.Code, rec.Body.String())
		}
	}
	require.Equal(t, 1, served)
	require.Equal(t, int64(1), e.fac.verifies.Load())
	require.Equal(t, int64(1), e.fac.settles.Load())
	require.Equal(t, int64(1), e.calls.Load())
	require.Len(t, e.entries(), 1)
}

// failingAppend is a ledger store whose writes fail.
type failingAppend struct {
	ledger.Store
	appends atomic.Int64
}

func (f *failingAppend) AppendSettlement(context.Context, ledger.Entry, ledger.AuditRecord) (ledger.AuditRecord, error) {
	f.appends.Add(1)
	return ledger.AuditRecord{}, errors.New("disk full")
}

// Bug: a ledger write that failed after a successful settlement answered
// 503 (the client paid and got nothing), released the spend hold (the
// settled amount no longer counted against the cap) and dropped the claim.
// Now the client is served, the spend is committed and the answer stored
// for replays; the write failure is logged for reconciliation.
func TestLedgerWriteFailureAfterSettlement(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	store := &failingAppend{Store: memory.NewLedger()}
	e.rebuild(rebuildOpts{lstore: store})
	hdr := e.pay(target, 2, localfacilitator.SignOptions{})
	rec := e.do(target, hdr)
	require.Equal(t, 200, rec.Code, rec.Body.String())
	require.Equal(t, `{"data":"/rows"}`, rec.Body.String())
	sr, err := x402.DecodeSettleResponse(rec.Header().Get("PAYMENT-RESPONSE"))
	require.NoError(t, err)
	require.True(t, sr.Success)
	require.Equal(t, int64(3), store.appends.Load(), "the write was retried")
	require.Equal(t, int64(1), e.spend.committed.Load())
	require.Equal(t, int64(0), e.spend.released.Load())

	again := e.do(target, hdr)
	require.Equal(t, 200, again.Code)
	require.Equal(t, "true", again.Header().Get("X-Payment-Deduped"))
	require.Equal(t, int64(1), e.fac.settles.Load())
	require.Equal(t, int64(1), e.calls.Load())
}

// The same for a pending settlement: committed, stored, 402 pending.
func TestLedgerWriteFailureWhilePending(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.rebuild(rebuildOpts{lstore: &failingAppend{Store: memory.NewLedger()}})
	e.fac.SettleFn = func(context.Context, x402.FacilitatorRequest) (*x402.SettleResponse, error) {
		return &x402.SettleResponse{ErrorReason: x402.ReasonSettlementPending, Transaction: "0xabc"}, nil
	}
	hdr := e.pay(target, 2, localfacilitator.SignOptions{})
	rec := e.do(target, hdr)
	require.Equal(t, 402, rec.Code)
	sr, err := x402.DecodeSettleResponse(rec.Header().Get("PAYMENT-RESPONSE"))
	require.NoError(t, err)
	require.True(t, sr.Pending())
	require.Equal(t, int64(1), e.spend.committed.Load())
	again := e.do(target, hdr)
	require.Equal(t, 402, again.Code)
	require.Equal(t, "true", again.Header().Get("X-Payment-Deduped"))
	require.Equal(t, int64(2), e.fac.settles.Load(), "settlement_pending is retried once with the same payload, then never again")
}

// countingLedger counts entry look-ups and can fail them.
type countingLedger struct {
	ledger.Store
	fail bool
}

func (c *countingLedger) GetEntry(ctx context.Context, tenant, key string) (ledger.Entry, error) {
	if c.fail {
		return ledger.Entry{}, errors.New("connection refused")
	}
	return c.Store.GetEntry(ctx, tenant, key)
}

// Bug: the ledger was consulted only after the worker ran, so an
// unreachable ledger, or a key the ledger already held, cost a verify, a
// spend hold and a worker call whose answer was thrown away. Now the check
// comes before anything is consumed.
func TestLedgerCheckedBeforeAnythingIsConsumed(t *testing.T) {
	t.Parallel()
	t.Run("unreachable", func(t *testing.T) {
		e := newEnv(t, nil)
		e.rebuild(rebuildOpts{lstore: &countingLedger{Store: memory.NewLedger(), fail: true}})
		rec := e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
		require.Equal(t, 503, rec.Code)
		require.Contains(t, rec.Body.String(), "store_unavailable")
		require.NotEmpty(t, rec.Header().Get(payment.HeaderIdempotencyKey))
		require.Equal(t, int64(0), e.calls.Load())
		require.Equal(t, int64(0), e.fac.verifies.Load())
		e.spend.requireNothingHeld(t)
	})
	t.Run("already settled, record lost", func(t *testing.T) {
		e := newEnv(t, nil)
		lstore := memory.NewLedger()
		e.rebuild(rebuildOpts{lstore: lstore})
		hdr := e.pay(target, 2, localfacilitator.SignOptions{})
		require.Equal(t, 200, e.do(target, hdr).Code)
		// The idempotency records are gone (a fresh KV), the ledger is not.
		e.rebuild(rebuildOpts{lstore: lstore})
		rec := e.do(target, hdr)
		require.Equal(t, 422, rec.Code, rec.Body.String())
		require.Contains(t, rec.Body.String(), "already settled")
		require.Equal(t, int64(1), e.calls.Load())
		require.Equal(t, int64(1), e.fac.verifies.Load())
		require.Equal(t, int64(1), e.fac.settles.Load())
	})
}

// Bug: settlement ran on the request's context, so a client that went away
// while the worker answered cancelled the settle call and left the payment
// pending (or, over HTTP, settled but unrecorded). It now runs detached.
func TestClientGoneBeforeSettlement(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	e.rebuild(rebuildOpts{fetcher: fetcherFunc(func(context.Context, *http.Request, *dispatch.Payload) (*http.Response, error) {
		e.calls.Add(1)
		cancel() // the client hangs up as the worker answers
		return dispatch.NewResponse(200, nil, []byte(`{"ok":true}`)), nil
	})})
	var settleCtxErr atomic.Value
	e.fac.SettleFn = func(ctx context.Context, r x402.FacilitatorRequest) (*x402.SettleResponse, error) {
		settleCtxErr.Store(fmt.Sprint(ctx.Err()))
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w", x402.ErrFacilitatorUnavailable, ctx.Err())
		}
		return e.fac.Facilitator.Settle(ctx, r)
	}
	req := httptest.NewRequestWithContext(ctx, "GET", target, nil)
	for k, v := range e.pay(target, 2, localfacilitator.SignOptions{}) {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	e.d.ServeHTTP(rec, req)
	require.Equal(t, "<nil>", settleCtxErr.Load())
	es := e.entries()
	require.Len(t, es, 1)
	require.Equal(t, ledger.StatusSettled, es[0].Status)
	require.Equal(t, int64(1), e.spend.committed.Load())
}

type fetcherFunc func(context.Context, *http.Request, *dispatch.Payload) (*http.Response, error)

func (f fetcherFunc) Fetch(ctx context.Context, r *http.Request, p *dispatch.Payload) (*http.Response, error) {
	return f(ctx, r, p)
}

// Every answer to a decodable payment names its idempotency key, the 402
// for a payment that does not match the requirement included.
func TestIdempotencyKeyOnEveryPaidAnswer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	cheap := e.requirement(target)
	cheap.Amount = "1"
	sp, err := e.signer.Sign(cheap, 2, localfacilitator.SignOptions{})
	require.NoError(t, err)
	h := http.Header{}
	h.Set(sp.Header, sp.Value)
	h.Set("Idempotency-Key", "mismatch-key")
	rec := e.do(target, h)
	require.Equal(t, 402, rec.Code)
	require.Equal(t, "hdr:mismatch-key", rec.Header().Get(payment.HeaderIdempotencyKey))

	// Worker failure, settlement failure, spend refusal: all carry it.
	e.status.Store(500)
	hdr := e.pay(target, 2, localfacilitator.SignOptions{})
	require.NotEmpty(t, e.do(target, hdr).Header().Get(payment.HeaderIdempotencyKey))
	e.status.Store(200)
	e.spend.refuse = true
	require.NotEmpty(t, e.do(target, hdr).Header().Get(payment.HeaderIdempotencyKey))
}

// A payment in the other generation's header (a version 1 payload in
// PAYMENT-SIGNATURE, version 2 in X-PAYMENT) is answered in both payment
// response headers, so the client finds it whichever it reads; a payment in
// its own generation's header gets exactly one.
func TestSettlementHeaderFollowsTheRequestHeader(t *testing.T) {
	t.Parallel()
	cases := []struct {
		version int
		header  string
		want    []string
		notWant string
	}{
		{2, "PAYMENT-SIGNATURE", []string{"PAYMENT-RESPONSE"}, "X-PAYMENT-RESPONSE"},
		{1, "X-PAYMENT", []string{"X-PAYMENT-RESPONSE"}, "PAYMENT-RESPONSE"},
		{1, "PAYMENT-SIGNATURE", []string{"PAYMENT-RESPONSE", "X-PAYMENT-RESPONSE"}, ""},
		{2, "X-PAYMENT", []string{"PAYMENT-RESPONSE", "X-PAYMENT-RESPONSE"}, ""},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("v%d in %s", c.version, c.header), func(t *testing.T) {
			e := newEnv(t, nil)
			sp, err := e.signer.Sign(e.requirement(target), c.version, localfacilitator.SignOptions{})
			require.NoError(t, err)
			h := http.Header{}
			h.Set(c.header, sp.Value)
			rec := e.do(target, h)
			require.Equal(t, 200, rec.Code, rec.Body.String())
			for _, name := range c.want {
				sr, err := x402.DecodeSettleResponse(rec.Header().Get(name))
				require.NoError(t, err, name)
				require.True(t, sr.Success)
			}
			if c.notWant != "" {
				require.Empty(t, rec.Header().Get(c.notWant))
			}
		})
	}
}

// A facilitator that refuses the payload as undecodable (an error wrapping
// x402.ErrInvalidPayment) is a 400 invalid_payment with the x402 fields,
// like a header the gateway cannot decode.
func TestFacilitatorInvalidPaymentError(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.fac.VerifyFn = func(context.Context, x402.FacilitatorRequest) (*x402.VerifyResponse, error) {
		return nil, fmt.Errorf("%w: malformed payload", x402.ErrInvalidPayment)
	}
	rec := e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
	require.Equal(t, 400, rec.Code)
	var body map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
	require.Equal(t, "invalid_payment", body["error"])
	require.NotEmpty(t, body["accepts"])
	require.NotEmpty(t, rec.Header().Get("PAYMENT-REQUIRED"))
	require.Equal(t, int64(0), e.calls.Load())
	e.spend.requireNothingHeld(t)
}

// The 400 for an undecodable payment carries the same challenge header as
// the 402 (with the payment-identifier extension offered).
func TestInvalidPaymentChallengeMatches402(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	challenge := e.do(target, nil)
	h := http.Header{}
	h.Set("X-PAYMENT", "%%%")
	bad := e.do(target, h)
	require.Equal(t, 400, bad.Code)
	a, err := x402.DecodePaymentRequired(challenge.Header().Get("PAYMENT-REQUIRED"))
	require.NoError(t, err)
	b, err := x402.DecodePaymentRequired(bad.Header().Get("PAYMENT-REQUIRED"))
	require.NoError(t, err)
	require.Equal(t, a.Accepts, b.Accepts)
	require.Equal(t, a.Extensions, b.Extensions)
}

// Bug: a stored record that was not a whole answer (state unknown, status
// 0) was replayed as is, and net/http panics on WriteHeader(0).
func TestCorruptRecordIsNotReplayed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	store := memory.NewKV()
	e.rebuild(rebuildOpts{kv: store})
	hdr := e.pay(target, 2, localfacilitator.SignOptions{})
	p, err := x402.PaymentFromHeader(hdr)
	require.NoError(t, err)
	key := x402.IdempotencyKey(p, hdr)
	g, err := exact.New().Check(p, p.Accepted, time.Now())
	require.NoError(t, err)
	key = x402.IdempotencyKeyFor(p, hdr, g.ID)
	fp := x402.FingerprintGrant("GET", "/t/paid/rows?limit=2", p, g)
	raw, _ := json.Marshal(map[string]any{"state": "weird", "slug": "paid", "fingerprint": fp, "key": key})
	require.NoError(t, store.Set(context.Background(), "x402:auth:"+g.ID, raw, 0)) // a derived key's record
	var rec *httptest.ResponseRecorder
	require.NotPanics(t, func() { rec = e.do(target, hdr) })
	require.Equal(t, 500, rec.Code)
	require.Equal(t, int64(0), e.calls.Load())
}

// flappingKV never lets a SetNX succeed and never finds the key: the holder
// keeps letting go between our SetNX and Get.
type flappingKV struct{ kv.Store }

func (flappingKV) SetNX(context.Context, string, []byte, time.Duration) (bool, error) {
	return false, nil
}
func (flappingKV) Get(context.Context, string) ([]byte, error) { return nil, kv.ErrNotFound }

// Bug: after the retries the bare kv.ErrNotFound was returned, a 500.
func TestClaimRetriesExhaustedIs409(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.rebuild(rebuildOpts{kv: flappingKV{memory.NewKV()}})
	rec := e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
	require.Equal(t, 409, rec.Code, rec.Body.String())
	require.Contains(t, rec.Body.String(), "idempotency_key_in_use")
}

// A worker's 4xx on a paid request is not charged, and its lifecycle follows
// the dispatcher's rule (4xx served, 5xx worker_error), as on a free one.
func TestWorkerClientErrorLifecycle(t *testing.T) {
	t.Parallel()
	for _, status := range []int{404, 503} {
		e := newEnv(t, nil)
		var lifecycle atomic.Value
		e.rebuild(rebuildOpts{events: dispatch.EventSinkFunc(func(ev dispatch.Event) {
			if ev.Type != dispatch.EventStart {
				lifecycle.Store(ev.Exchange.Lifecycle)
			}
		})})
		e.status.Store(int64(status))
		rec := e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
		require.Equal(t, status, rec.Code)
		require.Empty(t, rec.Header().Get("PAYMENT-RESPONSE"))
		require.Equal(t, int64(0), e.fac.settles.Load())
		require.Equal(t, int64(1), e.spend.released.Load())
		want := dispatch.LifecycleServed
		if status >= 500 {
			want = dispatch.LifecycleWorkerError
		}
		require.Equal(t, want, lifecycle.Load())
	}
}

// A settle answer with success false (not pending) drops the claim: the
// same payment can be retried and, once it settles, is served.
func TestSettlementFailureLeavesThePaymentRetryable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	var fail atomic.Bool
	fail.Store(true)
	e.fac.SettleFn = func(ctx context.Context, r x402.FacilitatorRequest) (*x402.SettleResponse, error) {
		if fail.Load() {
			return &x402.SettleResponse{ErrorReason: "insufficient_funds"}, nil
		}
		return e.fac.Facilitator.Settle(ctx, r)
	}
	hdr := e.pay(target, 1, localfacilitator.SignOptions{})
	rec := e.do(target, hdr)
	require.Equal(t, 402, rec.Code)
	sr, err := x402.DecodeSettleResponse(rec.Header().Get("X-PAYMENT-RESPONSE"))
	require.NoError(t, err)
	require.False(t, sr.Success)
	require.Equal(t, "base-sepolia", sr.Network, "a version 1 answer spells the network the version 1 way")
	require.Empty(t, rec.Header().Get("PAYMENT-RESPONSE"))
	var v1 map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &v1))
	require.Contains(t, v1["error"], "insufficient_funds")
	require.NotContains(t, rec.Body.String(), `"data"`)
	fail.Store(false)
	rec = e.do(target, hdr)
	require.Equal(t, 200, rec.Code)
	require.Empty(t, rec.Header().Get("X-Payment-Deduped"))
	require.Equal(t, int64(1), e.spend.committed.Load())
	require.Equal(t, int64(1), e.spend.released.Load())
}

var _ = base64.StdEncoding
