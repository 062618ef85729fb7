package payment_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/meter"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/payment"
)

const payTo = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"

// countingFacilitator wraps a facilitator, counts calls, and lets a test
// replace an answer.
type countingFacilitator struct {
	x402.Facilitator
	verifies, settles atomic.Int64
	VerifyFn          func(context.Context, x402.FacilitatorRequest) (*x402.VerifyResponse, error)
	SettleFn          func(context.Context, x402.FacilitatorRequest) (*x402.SettleResponse, error)
}

func (f *countingFacilitator) Verify(ctx context.Context, r x402.FacilitatorRequest) (*x402.VerifyResponse, error) {
	f.verifies.Add(1)
	if f.VerifyFn != nil {
		return f.VerifyFn(ctx, r)
	}
	return f.Facilitator.Verify(ctx, r)
}

func (f *countingFacilitator) Settle(ctx context.Context, r x402.FacilitatorRequest) (*x402.SettleResponse, error) {
	f.settles.Add(1)
	if f.SettleFn != nil {
		return f.SettleFn(ctx, r)
	}
	return f.Facilitator.Settle(ctx, r)
}

// fakeSpend is the stage's Meter: it counts the spend holds it gives out
// (a rate-only admission is no hold) and how each ended. Commit with a
// zero charge gives the held amount back, so it counts as released.
type fakeSpend struct {
	refuse             bool
	reserved, released atomic.Int64
	committed          atomic.Int64
	charged            atomic.Value // decimal.Decimal of the last commit
}

type fakeHold struct {
	s    *fakeSpend
	once sync.Once
}

func (f *fakeSpend) Admit(ctx context.Context, p meter.Params) (meter.Hold, error) {
	if !p.Usage && p.Spend.IsZero() {
		return noopHold{}, nil
	}
	if f.refuse {
		return nil, fmt.Errorf("%w: daily cap", dispatch.ErrSpendCapExceeded)
	}
	f.reserved.Add(1)
	return &fakeHold{s: f}, nil
}

// requireNothingHeld checks that every hold given out was given back and
// none kept: the request consumed no spend.
func (f *fakeSpend) requireNothingHeld(t *testing.T) {
	t.Helper()
	require.Equal(t, int64(0), f.committed.Load(), "nothing committed")
	require.Equal(t, f.reserved.Load(), f.released.Load(), "every hold given back")
}

func (h *fakeHold) SetHeaders(http.Header) {}
func (h *fakeHold) Commit(_ context.Context, charged decimal.Decimal) error {
	h.once.Do(func() {
		if charged.IsZero() {
			h.s.released.Add(1)
			return
		}
		h.s.charged.Store(charged)
		h.s.committed.Add(1)
	})
	return nil
}
func (h *fakeHold) Release(context.Context) error {
	h.once.Do(func() { h.s.released.Add(1) })
	return nil
}

type noopHold struct{}

func (noopHold) SetHeaders(http.Header)                        {}
func (noopHold) Commit(context.Context, decimal.Decimal) error { return nil }
func (noopHold) Release(context.Context) error                 { return nil }

type env struct {
	t       *testing.T
	d       *dispatch.Dispatcher
	fac     *countingFacilitator
	ledger  *ledger.Ledger
	spend   *fakeSpend
	calls   atomic.Int64
	status  atomic.Int64
	signer  *localfacilitator.Signer
	stage   *payment.Stage
	dir     *tenant.Directory
	lstore  ledger.Store
	bigBody atomic.Bool
}

func newEnv(t *testing.T, mutate func(*payment.Config)) *env {
	t.Helper()
	e := &env{t: t, spend: &fakeSpend{}}
	e.status.Store(200)
	local, err := localfacilitator.New(localfacilitator.Config{})
	require.NoError(t, err)
	e.fac = &countingFacilitator{Facilitator: local}
	if e.lstore == nil {
		e.lstore = memory.NewLedger()
	}
	e.ledger, err = ledger.New(e.lstore, ledger.Config{})
	require.NoError(t, err)
	cfg := payment.Config{Facilitator: e.fac, KV: memory.NewKV(), Ledger: e.ledger, Meter: e.spend, PayTo: payTo, MaxResponseBytes: 1 << 10}
	if mutate != nil {
		mutate(&cfg)
	}
	e.stage, err = payment.NewStage(cfg)
	require.NoError(t, err)
	e.dir, err = tenant.ParseDirectory([]byte(`{"tenants":[
	 {"slug":"paid","workerName":"w","priceUsd":"0.01","x402Enabled":true,"ownerUserId":"owner-1"},
	 {"slug":"free","workerName":"w","priceUsd":"0.01","x402Enabled":false}]}`))
	require.NoError(t, err)
	worker := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.calls.Add(1)
		if e.bigBody.Load() {
			w.Write([]byte(strings.Repeat("x", 4096)))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(int(e.status.Load()))
		fmt.Fprintf(w, `{"data":%q}`, r.URL.Path)
	})
	e.d, err = dispatch.NewDispatcher(dispatch.Config{
		Tenants: tenant.NewRegistry(e.dir),
		Fetcher: dispatch.NewHandlerFetcher(map[string]http.Handler{"w": worker}),
		Stages:  []dispatch.Stage{e.stage},
	})
	require.NoError(t, err)
	e.signer, err = localfacilitator.GenerateSigner()
	require.NoError(t, err)
	return e
}

func (e *env) requirement(target string) x402.Requirement {
	t, _ := e.dir.Lookup("paid")
	req, err := e.stage.Requirement(t, httptest.NewRequest("GET", target, nil))
	require.NoError(e.t, err)
	return req
}

func (e *env) do(target string, hdr http.Header) *httptest.ResponseRecorder {
	req := httptest.NewRequest("GET", target, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	e.d.ServeHTTP(rec, req)
	return rec
}

func (e *env) pay(target string, version int, opts localfacilitator.SignOptions) http.Header {
	sp, err := e.signer.Sign(e.requirement(target), version, opts)
	require.NoError(e.t, err)
	h := http.Header{}
	h.Set(sp.Header, sp.Value)
	return h
}

func (e *env) entries() []ledger.Entry {
	es, err := e.ledger.Entries(context.Background(), ledger.ListEntriesParams{Tenant: "paid"})
	require.NoError(e.t, err)
	return es
}

const target = "http://gw.local/t/paid/rows?limit=2"

func TestChallengeHasBothGenerations(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	rec := e.do(target, nil)
	require.Equal(t, 402, rec.Code)
	require.Equal(t, int64(0), e.calls.Load())
	pr, err := x402.DecodePaymentRequired(rec.Header().Get("PAYMENT-REQUIRED"))
	require.NoError(t, err)
	require.Equal(t, 2, pr.X402Version)
	require.Equal(t, "10000", pr.Accepts[0].Amount)
	require.Equal(t, "eip155:84532", pr.Accepts[0].Network)
	require.Equal(t, payTo, pr.Accepts[0].PayTo)
	require.Equal(t, target, pr.Resource.URL)
	var v1 map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &v1))
	require.Equal(t, float64(1), v1["x402Version"])
	acc := v1["accepts"].([]any)[0].(map[string]any)
	require.Equal(t, "base-sepolia", acc["network"])
	require.Equal(t, "10000", acc["maxAmountRequired"])
	require.Equal(t, "0x036CbD53842c5426634e7929541eC2318f3dCF7e", acc["asset"])
	require.Equal(t, map[string]any{"name": "USDC", "version": "2"}, acc["extra"])
	require.Equal(t, "paid", rec.Header().Get("X-Tenant-Id"))

	// A tenant that does not charge is served without payment.
	rec = e.do("http://gw.local/t/free/rows", nil)
	require.Equal(t, 200, rec.Code)
}

func TestPaysV2AndV1AndReplays(t *testing.T) {
	t.Parallel()
	for _, version := range []int{2, 1} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			e := newEnv(t, nil)
			hdr := e.pay(target, version, localfacilitator.SignOptions{})
			rec := e.do(target, hdr)
			require.Equal(t, 200, rec.Code, rec.Body.String())
			require.Equal(t, `{"data":"/rows"}`, rec.Body.String())
			respHeader := "PAYMENT-RESPONSE"
			if version == 1 {
				respHeader = "X-PAYMENT-RESPONSE"
			}
			sr, err := x402.DecodeSettleResponse(rec.Header().Get(respHeader))
			require.NoError(t, err)
			require.True(t, sr.Success)
			require.Equal(t, strings.ToLower(e.signer.Address()), strings.ToLower(sr.Payer))
			key := rec.Header().Get("X-Payment-Idempotency-Key")
			require.NotEmpty(t, key)
			es := e.entries()
			require.Len(t, es, 1)
			require.Equal(t, ledger.StatusSettled, es[0].Status)
			require.Equal(t, "0.01", es[0].Amount)
			require.Equal(t, "10000", es[0].AmountAtomic)
			require.Equal(t, key, es[0].IdempotencyKey)
			require.Equal(t, "owner-1", es[0].Owner)
			require.Equal(t, rec.Header().Get("X-Request-Id"), es[0].RequestID)
			require.Equal(t, int64(1), e.spend.committed.Load())

			// The same payment again: replayed, not charged, worker not called.
			again := e.do(target, hdr)
			require.Equal(t, 200, again.Code)
			require.Equal(t, "true", again.Header().Get("X-Payment-Deduped"))
			require.Equal(t, rec.Body.String(), again.Body.String())
			require.Equal(t, rec.Header().Get(respHeader), again.Header().Get(respHeader))
			require.Equal(t, int64(1), e.calls.Load())
			require.Equal(t, int64(1), e.fac.settles.Load())
			require.Len(t, e.entries(), 1)

			// The same payment for a different request is refused.
			other := e.do("http://gw.local/t/paid/other", hdr)
			require.Equal(t, 422, other.Code)
			require.Contains(t, other.Body.String(), "idempotency_key_reused")
			n, err := e.ledger.Verify(context.Background())
			require.NoError(t, err)
			require.Equal(t, int64(2), n, "the settlement intent and the settlement")
		})
	}
}

func TestSameAuthorizationUnderAnotherKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	hdr := e.pay(target, 2, localfacilitator.SignOptions{})
	hdr.Set("X-Payment-Idempotency-Key", "first")
	require.Equal(t, 200, e.do(target, hdr).Code)
	hdr.Set("X-Payment-Idempotency-Key", "second")
	rec := e.do(target, hdr)
	require.Equal(t, 200, rec.Code, "same request, same authorization: a replay")
	require.Equal(t, "true", rec.Header().Get("X-Payment-Deduped"))
	rec = e.do("http://gw.local/t/paid/elsewhere", hdr)
	require.Equal(t, 422, rec.Code)
	require.Equal(t, int64(1), e.fac.settles.Load())
}

func TestInvalidPayments(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	for _, bad := range []string{"%%%", "e30=", "bm90IGpzb24=", strings.Repeat("A", 20000)} {
		h := http.Header{}
		h.Set("PAYMENT-SIGNATURE", bad)
		rec := e.do(target, h)
		require.Equal(t, 400, rec.Code, bad)
		var body map[string]any
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
		require.Equal(t, "invalid_payment", body["error"])
		require.Equal(t, float64(1), body["x402Version"])
		require.NotEmpty(t, body["accepts"])
		require.NotEmpty(t, rec.Header().Get("PAYMENT-REQUIRED"))
	}
	// Signed for another amount: refused before the facilitator.
	cheap := e.requirement(target)
	cheap.Amount = "1"
	sp, err := e.signer.Sign(cheap, 2, localfacilitator.SignOptions{})
	require.NoError(t, err)
	h := http.Header{}
	h.Set(sp.Header, sp.Value)
	rec := e.do(target, h)
	require.Equal(t, 402, rec.Code)
	pr, err := x402.DecodePaymentRequired(rec.Header().Get("PAYMENT-REQUIRED"))
	require.NoError(t, err)
	require.Contains(t, pr.Error, "amount")
	// Expired authorization: the facilitator says invalid.
	old := time.Now().Add(-time.Hour)
	rec = e.do(target, e.pay(target, 2, localfacilitator.SignOptions{Now: old}))
	require.Equal(t, 402, rec.Code)
	require.Equal(t, int64(0), e.calls.Load(), "the worker is never called for an invalid payment")
	require.Equal(t, int64(0), e.fac.settles.Load())
	require.Empty(t, e.entries())
}

func TestWorkerFailureIsNotCharged(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.status.Store(500)
	hdr := e.pay(target, 2, localfacilitator.SignOptions{})
	rec := e.do(target, hdr)
	require.Equal(t, 500, rec.Code)
	require.Empty(t, rec.Header().Get("PAYMENT-RESPONSE"))
	require.Equal(t, int64(0), e.fac.settles.Load())
	require.Equal(t, int64(1), e.spend.released.Load())
	require.Empty(t, e.entries())
	// Nothing was stored: the same payment works once the worker is well.
	e.status.Store(200)
	rec = e.do(target, hdr)
	require.Equal(t, 200, rec.Code)
	require.Empty(t, rec.Header().Get("X-Payment-Deduped"))
	require.Len(t, e.entries(), 1)
}

func TestOversizedAnswerIsNotSettled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.bigBody.Store(true)
	rec := e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
	require.Equal(t, 502, rec.Code)
	require.Contains(t, rec.Body.String(), "tenant_worker_failure")
	require.Equal(t, int64(0), e.fac.settles.Load())
	require.Equal(t, int64(1), e.spend.released.Load())
}

func TestFacilitatorUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.fac.VerifyFn = func(context.Context, x402.FacilitatorRequest) (*x402.VerifyResponse, error) {
		return nil, fmt.Errorf("%w: connection refused", x402.ErrFacilitatorUnavailable)
	}
	rec := e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
	require.Equal(t, 502, rec.Code)
	require.Contains(t, rec.Body.String(), "facilitator_unavailable")
	require.Equal(t, int64(0), e.calls.Load())
	e.spend.requireNothingHeld(t)
}

func TestSettlementFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.fac.SettleFn = func(context.Context, x402.FacilitatorRequest) (*x402.SettleResponse, error) {
		return &x402.SettleResponse{Success: false, ErrorReason: "insufficient_funds", Network: "eip155:84532"}, nil
	}
	rec := e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
	require.Equal(t, 402, rec.Code)
	require.NotContains(t, rec.Body.String(), `"data"`, "the worker's body is dropped")
	sr, err := x402.DecodeSettleResponse(rec.Header().Get("PAYMENT-RESPONSE"))
	require.NoError(t, err)
	require.False(t, sr.Success)
	require.Equal(t, "insufficient_funds", sr.ErrorReason)
	require.Equal(t, int64(1), e.spend.released.Load())
	es := e.entries()
	require.Len(t, es, 1)
	require.Equal(t, ledger.StatusFailed, es[0].Status)
	require.True(t, strings.HasPrefix(es[0].IdempotencyKey, rec.Header().Get("X-Payment-Idempotency-Key")+"#failed:"))
	audit, err := e.ledger.AuditLog(context.Background(), ledger.ListAuditParams{})
	require.NoError(t, err)
	require.Len(t, audit, 2)
	require.Equal(t, payment.KindSettlementIntent, audit[0].Kind)
	require.Equal(t, ledger.KindSettlementFailed, audit[1].Kind)
	_, err = e.ledger.Verify(context.Background())
	require.NoError(t, err)
}

func TestPendingIsNeverSettledTwice(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.fac.SettleFn = func(context.Context, x402.FacilitatorRequest) (*x402.SettleResponse, error) {
		return nil, fmt.Errorf("%w: timeout", x402.ErrFacilitatorUnavailable)
	}
	hdr := e.pay(target, 2, localfacilitator.SignOptions{})
	rec := e.do(target, hdr)
	require.Equal(t, 402, rec.Code)
	es := e.entries()
	require.Len(t, es, 1)
	require.Equal(t, ledger.StatusPending, es[0].Status)
	again := e.do(target, hdr)
	require.Equal(t, 402, again.Code)
	require.Equal(t, "true", again.Header().Get("X-Payment-Deduped"))
	require.Equal(t, int64(1), e.fac.settles.Load())
	require.Equal(t, int64(1), e.spend.committed.Load(), "a pending amount stays counted against the cap")
}

func TestSpendCapRefusal(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.spend.refuse = true
	rec := e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
	require.Equal(t, 429, rec.Code)
	require.Contains(t, rec.Body.String(), "spend_cap_exceeded")
	require.Equal(t, int64(0), e.calls.Load())
	require.Equal(t, int64(0), e.fac.settles.Load())
}

type brokenLedger struct{ ledger.Store }

func (brokenLedger) GetEntry(context.Context, string, string) (ledger.Entry, error) {
	return ledger.Entry{}, errors.New("connection refused")
}

func TestLedgerUnreachableMeansNotSettled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	var err error
	e.ledger, err = ledger.New(brokenLedger{memory.NewLedger()}, ledger.Config{})
	require.NoError(t, err)
	e.stage, err = payment.NewStage(payment.Config{Facilitator: e.fac, KV: memory.NewKV(), Ledger: e.ledger, PayTo: payTo})
	require.NoError(t, err)
	e.d, err = dispatch.NewDispatcher(dispatch.Config{Tenants: tenant.NewRegistry(e.dir), Fetcher: dispatch.NewHandlerFetcher(map[string]http.Handler{
		"w": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "data") }),
	}), Stages: []dispatch.Stage{e.stage}})
	require.NoError(t, err)
	rec := e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
	require.Equal(t, 503, rec.Code)
	require.Contains(t, rec.Body.String(), "store_unavailable")
	require.Equal(t, int64(0), e.fac.settles.Load())
}

func TestOnePaymentManyConcurrentRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	hdr := e.pay(target, 2, localfacilitator.SignOptions{})
	const n = 50
	codes := make(chan *httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			codes <- e.do(target, hdr)
		}()
	}
	close(start)
	wg.Wait()
	close(codes)
	served, replayed, inUse := 0, 0, 0
	for rec := range codes {
		switch {
		case rec.Code == 200 && rec.Header().Get("X-Payment-Deduped") == "true":
			replayed++
		case rec.Code == 200:
			served++
		case rec.Code == 409:
			inUse++
			require.Contains(t, rec.Body.String(), "idempotency_key_in_use")
		default:
			t.Fatalf("unexpected answer %d %s", rec.Code, rec.Body.String())
		}
	}
	require.Equal(t, 1, served)
	require.Equal(t, n, served+replayed+inUse)
	require.Equal(t, int64(1), e.fac.verifies.Load(), "exactly one verify-to-settle sequence")
	require.Equal(t, int64(1), e.fac.settles.Load())
	require.Equal(t, int64(1), e.calls.Load())
	require.Len(t, e.entries(), 1)
}

func TestNewStageValidates(t *testing.T) {
	t.Parallel()
	_, err := payment.NewStage(payment.Config{})
	require.Error(t, err)
	local, _ := localfacilitator.New(localfacilitator.Config{})
	l, _ := ledger.New(memory.NewLedger(), ledger.Config{})
	_, err = payment.NewStage(payment.Config{Facilitator: local, KV: memory.NewKV(), Ledger: l, Network: "solana"})
	require.Error(t, err)
}

var _ = io.EOF

func TestWorkerNeverSeesTheSignedPayment(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	var seen []string
	var mu sync.Mutex
	e.rebuild(rebuildOpts{worker: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("PAYMENT-SIGNATURE")+r.Header.Get("X-PAYMENT"))
		mu.Unlock()
		fmt.Fprint(w, "ok")
	})})
	require.Equal(t, 200, e.do(target, e.pay(target, 2, localfacilitator.SignOptions{})).Code)
	require.Equal(t, 200, e.do(target, e.pay(target, 1, localfacilitator.SignOptions{})).Code)
	require.Equal(t, []string{"", ""}, seen)
}
