package payment_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/payment"
)

// dyingLedger stands in for a gateway that dies right after the
// facilitator settled: every settlement write fails, as if the process was
// gone before it could make it.
type dyingLedger struct {
	ledger.Store
	dead bool
}

func (d *dyingLedger) AppendSettlement(ctx context.Context, e ledger.Entry, r ledger.AuditRecord) (ledger.AuditRecord, error) {
	if d.dead {
		return ledger.AuditRecord{}, errors.New("killed")
	}
	return d.Store.AppendSettlement(ctx, e, r)
}

func TestRecoverRecordsSettlementsAKillLeftUnrecorded(t *testing.T) {
	t.Parallel()
	store := memory.NewLedger()
	dying := &dyingLedger{Store: store, dead: true}
	led, err := ledger.New(dying, ledger.Config{})
	require.NoError(t, err)
	fac, err := localfacilitator.New(localfacilitator.Config{})
	require.NoError(t, err)
	var settled int
	counting := &countingFacilitator{Facilitator: fac}
	counting.SettleFn = func(ctx context.Context, r x402.FacilitatorRequest) (*x402.SettleResponse, error) {
		settled++
		return fac.Settle(ctx, r)
	}
	kvs := memory.NewKV()
	now := time.Now()
	stage, err := payment.NewStage(payment.Config{Facilitator: counting, KV: kvs, Ledger: led, PayTo: payTo, Now: func() time.Time { return now }})
	require.NoError(t, err)
	dir, err := tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"paid","workerName":"w","priceUsd":"0.01","x402Enabled":true}]}`))
	require.NoError(t, err)
	d, err := dispatch.NewDispatcher(dispatch.Config{Tenants: tenant.NewRegistry(dir), Stages: []dispatch.Stage{stage},
		Fetcher: dispatch.NewHandlerFetcher(map[string]http.Handler{"w": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })})})
	require.NoError(t, err)
	e := &env{t: t, d: d, stage: stage, dir: dir}
	e.signer, err = localfacilitator.GenerateSigner()
	require.NoError(t, err)
	for i := 0; i < 3; i++ {
		e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
	}
	require.Equal(t, 3, settled, "the facilitator moved the money three times")
	es, err := store.ListEntries(context.Background(), ledger.ListEntriesParams{})
	require.NoError(t, err)
	require.Empty(t, es, "and nothing reached the ledger")

	// The gateway comes back on the same stores.
	dying.dead = false
	later := now.Add(time.Minute)
	stage2, err := payment.NewStage(payment.Config{Facilitator: counting, KV: kvs, Ledger: led, PayTo: payTo, Now: func() time.Time { return later }})
	require.NoError(t, err)
	rep, err := stage2.Recover(context.Background(), 2*time.Minute)
	require.NoError(t, err)
	require.Empty(t, rep.Recovered, "intents younger than the age asked for are left alone")
	require.Equal(t, 3, rep.Open)
	rep, err = stage2.Recover(context.Background(), 0)
	require.NoError(t, err)
	require.Len(t, rep.Recovered, 3)
	es, err = store.ListEntries(context.Background(), ledger.ListEntriesParams{})
	require.NoError(t, err)
	require.Len(t, es, 3)
	for _, en := range es {
		// The settle answer was kept with the idempotency record before
		// the ledger write died: recovery books the true outcome, with its
		// transaction, not an unknown pending one.
		require.Equal(t, ledger.StatusSettled, en.Status)
		require.NotEmpty(t, en.TxHash)
		require.Equal(t, "10000", en.AmountAtomic)
	}
	_, err = led.Verify(context.Background())
	require.NoError(t, err)

	// Nothing left to recover, even for a fresh stage that reads the
	// cursor from the KV store.
	rep, err = stage2.Recover(context.Background(), 0)
	require.NoError(t, err)
	require.Empty(t, rep.Recovered)
	stage3, err := payment.NewStage(payment.Config{Facilitator: counting, KV: kvs, Ledger: led, PayTo: payTo})
	require.NoError(t, err)
	rep, err = stage3.Recover(context.Background(), 0)
	require.NoError(t, err)
	require.Empty(t, rep.Recovered)
	require.Zero(t, rep.Scanned, "the cursor skips what was already resolved")
}

func TestRecoverLeavesSettledIntentsAlone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	for i := 0; i < 2; i++ {
		require.Equal(t, 200, e.do(target, e.pay(target, 2, localfacilitator.SignOptions{})).Code)
	}
	e.fac.SettleFn = func(context.Context, x402.FacilitatorRequest) (*x402.SettleResponse, error) {
		return &x402.SettleResponse{Success: false, ErrorReason: "insufficient_funds"}, nil
	}
	require.Equal(t, 402, e.do(target, e.pay(target, 2, localfacilitator.SignOptions{})).Code)
	rep, err := e.stage.Recover(context.Background(), 0)
	require.NoError(t, err)
	require.Empty(t, rep.Recovered)
	require.Equal(t, 6, rep.Scanned)
	require.Len(t, e.entries(), 3)
}

func TestIntentWriteFailureMeansNotSettled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	var err error
	e.ledger, err = ledger.New(noAudit{memory.NewLedger()}, ledger.Config{})
	require.NoError(t, err)
	e.stage, err = payment.NewStage(payment.Config{Facilitator: e.fac, KV: memory.NewKV(), Ledger: e.ledger, PayTo: payTo})
	require.NoError(t, err)
	e.d, err = dispatch.NewDispatcher(dispatch.Config{Tenants: tenant.NewRegistry(e.dir), Stages: []dispatch.Stage{e.stage},
		Fetcher: dispatch.NewHandlerFetcher(map[string]http.Handler{"w": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })})})
	require.NoError(t, err)
	rec := e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
	require.Equal(t, 503, rec.Code)
	require.Contains(t, rec.Body.String(), "store_unavailable")
	require.Equal(t, int64(0), e.fac.settles.Load())
}

type noAudit struct{ ledger.Store }

func (noAudit) AppendAudit(context.Context, ledger.AuditRecord) (ledger.AuditRecord, error) {
	return ledger.AuditRecord{}, errors.New("disk full")
}

// A client-chosen request id shared by two paid requests must not let the
// second one's outcome close the first one's intent.
func TestRecoverMatchesIntentsByEntryNotRequestID(t *testing.T) {
	t.Parallel()
	store := memory.NewLedger()
	dying := &dyingLedger{Store: store, dead: true}
	led, err := ledger.New(dying, ledger.Config{})
	require.NoError(t, err)
	fac, err := localfacilitator.New(localfacilitator.Config{})
	require.NoError(t, err)
	kvs := memory.NewKV()
	stage, err := payment.NewStage(payment.Config{Facilitator: fac, KV: kvs, Ledger: led, PayTo: payTo})
	require.NoError(t, err)
	dir, err := tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"paid","workerName":"w","priceUsd":"0.01","x402Enabled":true}]}`))
	require.NoError(t, err)
	d, err := dispatch.NewDispatcher(dispatch.Config{Tenants: tenant.NewRegistry(dir), Stages: []dispatch.Stage{stage}, KeepRequestID: true,
		Fetcher: dispatch.NewHandlerFetcher(map[string]http.Handler{"w": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })})})
	require.NoError(t, err)
	e := &env{t: t, d: d, stage: stage, dir: dir}
	e.signer, err = localfacilitator.GenerateSigner()
	require.NoError(t, err)
	const rid = "7d4b0a52-4a53-4a8f-9d36-3b2d8f0f9a11"
	h := e.pay(target, 2, localfacilitator.SignOptions{})
	h.Set("X-Request-Id", rid)
	require.Equal(t, 200, e.do(target, h).Code) // settled, not recorded
	dying.dead = false
	h = e.pay(target, 2, localfacilitator.SignOptions{})
	h.Set("X-Request-Id", rid)
	require.Equal(t, 200, e.do(target, h).Code) // settled and recorded, same request id
	rep, err := stage.Recover(context.Background(), 0)
	require.NoError(t, err)
	require.Len(t, rep.Recovered, 1, "the first settlement is recovered")
	es, err := store.ListEntries(context.Background(), ledger.ListEntriesParams{})
	require.NoError(t, err)
	require.Len(t, es, 2)
}

// failingOnce fails the first settlement write it sees with a failed status.
type failingFailed struct {
	ledger.Store
	fail bool
}

func (f *failingFailed) AppendSettlement(ctx context.Context, e ledger.Entry, r ledger.AuditRecord) (ledger.AuditRecord, error) {
	if f.fail && e.Status == ledger.StatusFailed {
		return ledger.AuditRecord{}, errors.New("blip")
	}
	return f.Store.AppendSettlement(ctx, e, r)
}

// A failed settlement whose record was lost, then a retry of the same
// payment that settles: Recover writes nothing more (one payment, one entry).
func TestRecoverDoesNotDoubleRecordARetriedPayment(t *testing.T) {
	t.Parallel()
	store := memory.NewLedger()
	ff := &failingFailed{Store: store, fail: true}
	e := newEnv(t, nil)
	var err error
	e.ledger, err = ledger.New(ff, ledger.Config{})
	require.NoError(t, err)
	e.stage, err = payment.NewStage(payment.Config{Facilitator: e.fac, KV: memory.NewKV(), Ledger: e.ledger, PayTo: payTo})
	require.NoError(t, err)
	e.d, err = dispatch.NewDispatcher(dispatch.Config{Tenants: tenant.NewRegistry(e.dir), Stages: []dispatch.Stage{e.stage},
		Fetcher: dispatch.NewHandlerFetcher(map[string]http.Handler{"w": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })})})
	require.NoError(t, err)
	hdr := e.pay(target, 2, localfacilitator.SignOptions{})
	e.fac.SettleFn = func(context.Context, x402.FacilitatorRequest) (*x402.SettleResponse, error) {
		return &x402.SettleResponse{Success: false, ErrorReason: "insufficient_funds"}, nil
	}
	require.Equal(t, 402, e.do(target, hdr).Code)
	e.fac.SettleFn = nil
	require.Equal(t, 200, e.do(target, hdr).Code, "the payer may retry after a failed settlement")
	rep, err := e.stage.Recover(context.Background(), 0)
	require.NoError(t, err)
	require.Empty(t, rep.Recovered)
	es, err := store.ListEntries(context.Background(), ledger.ListEntriesParams{})
	require.NoError(t, err)
	require.Len(t, es, 1)
	require.Equal(t, ledger.StatusSettled, es[0].Status)
}
