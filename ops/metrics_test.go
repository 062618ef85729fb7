package ops_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/kv/kvtest"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/ledger/ledgertest"
	"github.com/402claw/dispatcher/ops"
	"github.com/402claw/dispatcher/x402"
)

func newMetrics(t testing.TB, cfg ops.MetricsConfig) *ops.Metrics {
	t.Helper()
	m, err := ops.NewMetrics(cfg)
	require.NoError(t, err)
	return m
}

// Requests from many goroutines through a real dispatcher are counted
// exactly, under the tenant, lifecycle and status of each.
func TestMetricsRequestsExactUnderConcurrency(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, ops.MetricsConfig{Token: "s3cret"})
	d := newObsDispatcher(t, dispatch.Config{Events: m.Sink(), Stages: []dispatch.Stage{refuseStage}})

	const workers, perWorker = 32, 40 // 1280 requests, 320 of each kind
	var wg sync.WaitGroup
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				var w int
				switch i % 4 {
				case 0:
					w = serve(d, "GET", "http://gw/t/alpha/x").Code
					require.Equal(t, 200, w)
				case 1:
					w = serve(d, "GET", "http://gw/t/beta/x").Code
					require.Equal(t, 500, w)
				case 2:
					w = serve(d, "GET", "http://gw/t/alpha/x", "X-Refuse", "1").Code
					require.Equal(t, 429, w)
				case 3:
					w = serve(d, "GET", "http://gw/t/gamma/299").Code
					require.Equal(t, 299, w)
				}
			}
		}()
	}
	wg.Wait()
	// Requests for no tenant emit no event and are not counted.
	require.Equal(t, 404, serve(d, "GET", "http://gw/t/nobody/x").Code)

	fams := scrape(t, m.Handler(), "Authorization", "Bearer s3cret")
	const each = workers * perWorker / 4
	require.Equal(t, float64(each), counter(t, fams, ops.MetricRequests, "lifecycle", "served", "status", "200", "tenant", "alpha"))
	require.Equal(t, float64(each), counter(t, fams, ops.MetricRequests, "lifecycle", "worker_error", "status", "500", "tenant", "beta"))
	require.Equal(t, float64(each), counter(t, fams, ops.MetricRequests, "lifecycle", "rate_limited", "status", "429", "tenant", "alpha"))
	// 299 is no status net/http knows: it is bucketed by class.
	require.Equal(t, float64(each), counter(t, fams, ops.MetricRequests, "lifecycle", "served", "status", "2xx", "tenant", "gamma"))
	require.Len(t, fams[ops.MetricRequests].GetMetric(), 4)
	n, _ := histogram(t, fams, ops.MetricRequestDuration)
	require.Equal(t, uint64(workers*perWorker), n)
}

// The request duration histogram observes the event's duration, in
// seconds, on the dispatcher's clock.
func TestMetricsRequestDurationUsesEventDuration(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, ops.MetricsConfig{})
	var calls atomic.Int64
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// Each request reads the clock twice: at arrival and at the answer.
	now := func() time.Time { return base.Add(time.Duration(calls.Add(1)) * 750 * time.Millisecond) }
	d := newObsDispatcher(t, dispatch.Config{Events: m.Sink(), Now: now})
	for i := 0; i < 4; i++ {
		require.Equal(t, 200, serve(d, "GET", "http://gw/t/alpha/").Code)
	}
	n, sum := histogram(t, scrape(t, m.Handler()), ops.MetricRequestDuration)
	require.Equal(t, uint64(4), n)
	require.InDelta(t, 4*0.75, sum, 1e-9)
}

func TestMetricsHandlerToken(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, ops.MetricsConfig{Token: "tok-123"})
	h := m.Handler()
	for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer tok-12", "Bearer tok-1234", "Basic tok-123", "Bearertok-123", "Bearer tok-123 x", "tok-123"} {
		w := serve(h, "GET", "/metrics", "Authorization", auth)
		require.Equal(t, http.StatusUnauthorized, w.Code, "Authorization %q", auth)
		require.Equal(t, `Bearer realm="metrics"`, w.Header().Get("WWW-Authenticate"))
		require.Equal(t, "application/json", w.Header().Get("Content-Type"))
		require.JSONEq(t, `{"ok":false,"error":"unauthorized","message":"the metrics need Authorization: Bearer <metrics token>"}`, w.Body.String())
		require.NotContains(t, w.Body.String(), "dispatcher_")
	}
	for _, auth := range []string{"Bearer tok-123", "bearer tok-123", "BEARER   tok-123"} {
		w := serve(h, "GET", "/metrics", "Authorization", auth)
		require.Equal(t, http.StatusOK, w.Code, "Authorization %q", auth)
		require.Contains(t, w.Body.String(), ops.MetricEventsDropped)
	}
	// Without a token the handler is open.
	open := newMetrics(t, ops.MetricsConfig{})
	require.Equal(t, http.StatusOK, serve(open.Handler(), "GET", "/metrics").Code)
}

// Every series named in DESIGN section 17 is on the page from the start,
// and the library never registers anything in the global registry.
func TestMetricsOwnRegistryAndNames(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, ops.MetricsConfig{})
	m2 := newMetrics(t, ops.MetricsConfig{}) // a second one does not collide
	m.Settlement("alpha", "exact", "settled", decimal.RequireFromString("0.01"))
	m.Sink().Emit(dispatch.Event{Type: dispatch.EventSuccess, Tenant: "alpha", Status: 200})
	fams := scrape(t, m.Handler())
	for _, name := range []string{ops.MetricRequests, ops.MetricRequestDuration, ops.MetricSettlements, ops.MetricSettledUSD,
		ops.MetricFacilitatorDuration, ops.MetricStoreDuration, ops.MetricEventsDropped} {
		require.Contains(t, fams, name)
	}
	for _, op := range []string{"verify", "settle", "supported"} {
		n, _ := histogram(t, fams, ops.MetricFacilitatorDuration, "op", op)
		require.Zero(t, n)
	}
	n, _ := histogram(t, fams, ops.MetricStoreDuration, "op", "kv_incr")
	require.Zero(t, n)
	require.Equal(t, float64(1), counter(t, fams, ops.MetricRequests, "lifecycle", "none", "status", "200", "tenant", "alpha"))
	require.Nil(t, sample(scrape(t, m2.Handler()), ops.MetricRequests, "lifecycle", "none", "status", "200", "tenant", "alpha"))

	global, err := prometheus.DefaultGatherer.Gather()
	require.NoError(t, err)
	for _, f := range global {
		require.False(t, strings.HasPrefix(f.GetName(), "dispatcher_"), "%s is in the global registry", f.GetName())
	}
	// Runtime metrics are there only when asked for.
	require.NotContains(t, fams, "go_goroutines")
	rt := newMetrics(t, ops.MetricsConfig{RuntimeMetrics: true})
	require.Contains(t, scrape(t, rt.Handler()), "go_goroutines")
}

func TestNewMetricsRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]ops.MetricsConfig{
		"empty buckets":      {DurationBuckets: []float64{}},
		"unordered buckets":  {DurationBuckets: []float64{0.1, 0.1}},
		"negative tenants":   {MaxTenants: -1},
		"token white space":  {Token: "a b"},
		"token with newline": {Token: "ab\n"},
	} {
		_, err := ops.NewMetrics(cfg)
		require.Error(t, err, name)
		require.Contains(t, err.Error(), "ops: MetricsConfig.", name)
	}
}

// Settlements are counted by tenant, scheme and status; only settled
// amounts add to the USD total, summed exactly from many goroutines.
func TestMetricsSettlementsExact(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, ops.MetricsConfig{})
	const workers, perWorker = 20, 50
	milli := decimal.RequireFromString("0.001")
	var wg sync.WaitGroup
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				m.Settlement("alpha", "exact", "settled", milli)
				m.Settlement("alpha", "upto", "pending", milli)
				m.Settlement("beta", "exact", "failed", milli)
			}
		}()
	}
	wg.Wait()
	m.Settlement("beta", "exact", "settled", decimal.RequireFromString("-5")) // never subtracts
	fams := scrape(t, m.Handler())
	total := float64(workers * perWorker)
	require.Equal(t, total, counter(t, fams, ops.MetricSettlements, "scheme", "exact", "status", "settled", "tenant", "alpha"))
	require.Equal(t, total, counter(t, fams, ops.MetricSettlements, "scheme", "upto", "status", "pending", "tenant", "alpha"))
	require.Equal(t, total, counter(t, fams, ops.MetricSettlements, "scheme", "exact", "status", "failed", "tenant", "beta"))
	// 1000 x 0.001 is exactly 1: a float sum would be 1.0000000000000007.
	require.Equal(t, 1.0, counter(t, fams, ops.MetricSettledUSD, "tenant", "alpha"))
	require.Nil(t, sample(fams, ops.MetricSettledUSD, "tenant", "beta"))
}

// Label values are bounded: tenants beyond MaxTenants, malformed values
// and unknown values beyond each label's allowance become "other".
func TestMetricsLabelCardinalityBounded(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, ops.MetricsConfig{MaxTenants: 3})
	sink := m.Sink()
	for i := 0; i < 10; i++ {
		sink.Emit(dispatch.Event{Type: dispatch.EventSuccess, Tenant: fmt.Sprintf("t%d", i), Status: 200})
	}
	sink.Emit(dispatch.Event{Type: dispatch.EventFailure, Tenant: "t0", Status: 1000, Code: "x"})
	sink.Emit(dispatch.Event{Type: dispatch.EventStart, Tenant: "t1"}) // not counted
	for i := 0; i < 40; i++ {
		m.Settlement("t0", fmt.Sprintf("scheme-%d", i), "settled", decimal.Zero)
	}
	m.Settlement("t0", "Exact Scheme!", "weird status", decimal.Zero)
	m.Settlement("t0", "exact", string([]byte{0xff}), decimal.Zero)
	m.Settlement("t0", strings.Repeat("s", 65), "settled", decimal.Zero)

	fams := scrape(t, m.Handler())
	tenants := map[string]float64{}
	for _, s := range fams[ops.MetricRequests].GetMetric() {
		for _, l := range s.GetLabel() {
			if l.GetName() == "tenant" {
				tenants[l.GetValue()] += s.GetCounter().GetValue()
			}
		}
	}
	require.Equal(t, map[string]float64{"t0": 2, "t1": 1, "t2": 1, "other": 7}, tenants)
	require.Equal(t, float64(1), counter(t, fams, ops.MetricRequests, "lifecycle", "none", "status", "other", "tenant", "t0"))

	schemes := map[string]float64{}
	for _, s := range fams[ops.MetricSettlements].GetMetric() {
		for _, l := range s.GetLabel() {
			if l.GetName() == "scheme" {
				schemes[l.GetValue()] += s.GetCounter().GetValue()
			}
		}
	}
	require.Len(t, schemes, 16+2) // 16 admitted unknown schemes, "exact", "other"
	require.Equal(t, float64(40-16+2), schemes["other"])
	require.Equal(t, float64(1), counter(t, fams, ops.MetricSettlements, "scheme", "other", "status", "other", "tenant", "t0"))
	require.Equal(t, float64(1), counter(t, fams, ops.MetricSettlements, "scheme", "exact", "status", "other", "tenant", "t0"))
}

func TestMetricsCountDropped(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, ops.MetricsConfig{})
	require.Equal(t, 0.0, counter(t, scrape(t, m.Handler()), ops.MetricEventsDropped))
	var dropped atomic.Uint64
	m.CountDropped(dropped.Load)
	dropped.Store(7)
	require.Equal(t, 7.0, counter(t, scrape(t, m.Handler()), ops.MetricEventsDropped))
	dropped.Add(5)
	require.Equal(t, 12.0, counter(t, scrape(t, m.Handler()), ops.MetricEventsDropped))
	m.CountDropped(nil)
	require.Equal(t, 0.0, counter(t, scrape(t, m.Handler()), ops.MetricEventsDropped))
}

// steppingClock advances by step at every reading.
func steppingClock(step time.Duration) func() time.Time {
	var n atomic.Int64
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return func() time.Time { return base.Add(time.Duration(n.Add(1)) * step) }
}

func TestMetricsFacilitatorTimesEachCall(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, ops.MetricsConfig{Now: steppingClock(250 * time.Millisecond)})
	fail := &fakeFacilitator{SettleFn: func(context.Context, x402.FacilitatorRequest) (*x402.SettleResponse, error) {
		return nil, x402.ErrFacilitatorUnavailable
	}}
	f := m.Facilitator(fail)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		v, err := f.Verify(ctx, x402.FacilitatorRequest{})
		require.NoError(t, err)
		require.True(t, v.IsValid)
	}
	_, err := f.Settle(ctx, x402.FacilitatorRequest{})
	require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable) // errors pass through, and are timed
	_, err = f.Supported(ctx)
	require.NoError(t, err)
	require.Nil(t, m.Facilitator(nil))

	fams := scrape(t, m.Handler())
	n, sum := histogram(t, fams, ops.MetricFacilitatorDuration, "op", "verify")
	require.Equal(t, uint64(3), n)
	require.InDelta(t, 0.75, sum, 1e-9)
	n, sum = histogram(t, fams, ops.MetricFacilitatorDuration, "op", "settle")
	require.Equal(t, uint64(1), n)
	require.InDelta(t, 0.25, sum, 1e-9)
	n, _ = histogram(t, fams, ops.MetricFacilitatorDuration, "op", "supported")
	require.Equal(t, uint64(1), n)
}

// plainKV hides the memory store's optional abilities.
type plainKV struct{ kv.Store }

func TestMetricsKVStoreKeepsBatchIncrementer(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, ops.MetricsConfig{})
	batch := m.KVStore(memory.NewKV())
	_, ok := batch.(kv.BatchIncrementer)
	require.True(t, ok, "the wrapper of a batch store must be a batch store")
	plain := m.KVStore(plainKV{memory.NewKV()})
	_, ok = plain.(kv.BatchIncrementer)
	require.False(t, ok, "the wrapper of a plain store must not claim a batch ability")
	require.Nil(t, m.KVStore(nil))

	ctx := context.Background()
	keys := []string{"a", "b"}
	ins := []kv.Increment{{Delta: 1, Max: kv.Unbounded}, {Delta: 2, Max: kv.Unbounded}}
	// kv.IncrAll takes the one-call path through the batch wrapper ...
	vals, refused, err := kv.IncrAll(ctx, batch, keys, ins)
	require.NoError(t, err)
	require.Equal(t, -1, refused)
	require.Equal(t, []int64{1, 2}, vals)
	// ... and the one-by-one path through the plain one.
	_, _, err = kv.IncrAll(ctx, plain, keys, ins)
	require.NoError(t, err)
	require.NoError(t, batch.Set(ctx, "v", []byte("x"), 0))
	_, err = batch.Get(ctx, "v")
	require.NoError(t, err)
	_, err = batch.Get(ctx, "missing")
	require.ErrorIs(t, err, kv.ErrNotFound) // sentinels pass through
	set, err := batch.SetNX(ctx, "v", []byte("y"), 0)
	require.NoError(t, err)
	require.False(t, set)
	require.NoError(t, batch.Delete(ctx, "v"))

	fams := scrape(t, m.Handler())
	for op, want := range map[string]uint64{"kv_incr_all": 1, "kv_incr": 2, "kv_set": 1, "kv_get": 2, "kv_setnx": 1, "kv_delete": 1} {
		n, _ := histogram(t, fams, ops.MetricStoreDuration, "op", op)
		require.Equal(t, want, n, op)
	}
}

// Exact counts of timed calls from many goroutines.
func TestMetricsKVStoreCountsConcurrentCalls(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, ops.MetricsConfig{})
	s := m.KVStore(memory.NewKV())
	admitted := kvtest.Hammer(t, 2000, 32, func(i int) (bool, error) {
		_, ok, err := s.Incr(context.Background(), "quota", kv.Increment{Delta: 1, Max: 1500})
		return ok, err
	})
	require.Equal(t, int64(1500), admitted)
	n, _ := histogram(t, scrape(t, m.Handler()), ops.MetricStoreDuration, "op", "kv_incr")
	require.Equal(t, uint64(2000), n)
}

// The wrappers are transparent: they pass the port's conformance suites.
func TestMetricsKVStoreConformance(t *testing.T) {
	m := newMetrics(t, ops.MetricsConfig{})
	kvtest.Run(t, func(t *testing.T) kv.Store { return m.KVStore(memory.NewKV()) })
}

func TestMetricsLedgerStoreConformance(t *testing.T) {
	m := newMetrics(t, ops.MetricsConfig{})
	ledgertest.Run(t, func(t *testing.T) ledger.Store { return m.LedgerStore(memory.NewLedger()) })
}

// plainLedger hides the memory ledger's optional KeyLookup.
type plainLedger struct{ ledger.Store }

func TestMetricsLedgerStoreKeepsKeyLookup(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, ops.MetricsConfig{})
	s := m.LedgerStore(memory.NewLedger())
	_, ok := s.(ledger.KeyLookup)
	require.True(t, ok)
	_, ok = m.LedgerStore(plainLedger{memory.NewLedger()}).(ledger.KeyLookup)
	require.False(t, ok)
	require.Nil(t, m.LedgerStore(nil))

	ctx := context.Background()
	e := ledgertest.Entry("alpha", "key-1", time.Now())
	rec := ledgertest.Record(t, e)
	_, err := s.AppendSettlement(ctx, e, rec)
	require.NoError(t, err)
	_, err = s.AppendSettlement(ctx, e, rec)
	require.ErrorIs(t, err, ledger.ErrDuplicate) // sentinels pass through
	_, err = s.GetEntry(ctx, "alpha", "key-1")
	require.NoError(t, err)
	_, err = s.ListEntries(ctx, ledger.ListEntriesParams{})
	require.NoError(t, err)
	_, err = s.ListAudit(ctx, ledger.ListAuditParams{})
	require.NoError(t, err)
	_, err = s.AppendAudit(ctx, ledger.AuditRecord{Time: e.Time, Kind: "note", Tenant: "alpha", Subject: "s", Data: []byte(`{}`)})
	require.NoError(t, err)
	got, err := s.(ledger.KeyLookup).EntriesByKey(ctx, "key-1")
	require.NoError(t, err)
	require.Len(t, got, 1)
	// The ledger finds the ability through the wrapper.
	l, err := ledger.New(s, ledger.Config{})
	require.NoError(t, err)
	got, err = l.EntriesByKey(ctx, "key-1")
	require.NoError(t, err)
	require.Len(t, got, 1)

	fams := scrape(t, m.Handler())
	for op, want := range map[string]uint64{"ledger_append_settlement": 2, "ledger_get_entry": 1, "ledger_list_entries": 1,
		"ledger_list_audit": 1, "ledger_append_audit": 1, "ledger_entries_by_key": 2} {
		n, _ := histogram(t, fams, ops.MetricStoreDuration, "op", op)
		require.Equal(t, want, n, op)
	}
}
