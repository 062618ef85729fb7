// Package metricstest is the conformance suite of metrics.Store. Every
// adapter runs it:
//
//	func TestEvents(t *testing.T) {
//		metricstest.Run(t, func(t *testing.T) metrics.Store { return newStore(t) })
//	}
package metricstest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/metrics"
)

// NewStore returns a fresh, empty store; it is called once per subtest.
type NewStore func(t *testing.T) metrics.Store

// Base is the time the suite's events are stamped around.
var Base = time.Date(2025, 3, 10, 10, 0, 0, 0, time.UTC)

// Event builds a valid event for tests: a call of api by caller at t.
func Event(id, api, caller string, t time.Time, lc metrics.Lifecycle, price string, latencyMs int64) metrics.UsageEvent {
	return metrics.UsageEvent{
		Time: t, RequestID: id, APIID: api, Endpoint: "/v1/x", Owner: "owner-" + api,
		Directory: "data", CallerID: metrics.HashCaller(caller), LatencyMs: latencyMs,
		PriceUSD: decimal.RequireFromString(price), Lifecycle: lc,
	}
}

// Run runs the conformance suite against stores made by newStore.
func Run(t *testing.T, newStore NewStore) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s metrics.Store)
	}{
		{"RecentOrderAndLimit", testRecentOrder},
		{"RecentReturnsNormalizedEvents", testNormalized},
		{"DedupByRequestID", testDedup},
		{"InvalidBatchStoresNothing", testInvalidBatch},
		{"RollupHourAndDayBoundaries", testBoundaries},
		{"RollupContents", testRollupContents},
		{"ExactRevenue", testExactRevenue},
		{"ConcurrentAppends", testConcurrent},
		{"ScanRollupsMatchesRollups", testScanner},
		{"ClientNetAndPayer", testSources},
		{"CallerSetsBounded", testBoundedSets},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

func eventJSON(t *testing.T, events []metrics.UsageEvent) []string {
	t.Helper()
	out := make([]string, len(events))
	for i, e := range events {
		b, err := json.Marshal(e)
		require.NoError(t, err)
		out[i] = string(b)
	}
	return out
}

func ids(events []metrics.UsageEvent) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.RequestID
	}
	return out
}

func testRecentOrder(t *testing.T, s metrics.Store) {
	ctx := context.Background()
	got, err := s.Recent(ctx, 10)
	require.NoError(t, err)
	require.Empty(t, got)

	at := func(min int) time.Time { return Base.Add(time.Duration(min) * time.Minute) }
	require.NoError(t, s.Append(ctx,
		Event("r1", "a", "x", at(1), metrics.LifecycleServed, "0", 5),
		Event("r3", "a", "x", at(3), metrics.LifecycleServed, "0", 5)))
	require.NoError(t, s.Append(ctx, Event("r2", "a", "x", at(2), metrics.LifecycleServed, "0", 5)))
	// Same time as r3, appended later: comes first.
	require.NoError(t, s.Append(ctx, Event("r3b", "b", "y", at(3), metrics.LifecycleServed, "0", 5)))
	require.NoError(t, s.Append(ctx, Event("r0", "a", "x", at(0), metrics.LifecycleServed, "0", 5)))

	got, err = s.Recent(ctx, 10)
	require.NoError(t, err)
	require.Equal(t, []string{"r3b", "r3", "r2", "r1", "r0"}, ids(got))
	got, err = s.Recent(ctx, 2)
	require.NoError(t, err)
	require.Equal(t, []string{"r3b", "r3"}, ids(got))

	for _, limit := range []int{0, -1} {
		_, err = s.Recent(ctx, limit)
		require.ErrorIs(t, err, metrics.ErrInvalidQuery)
	}
}

func testNormalized(t *testing.T, s metrics.Store) {
	ctx := context.Background()
	zone := time.FixedZone("X", 5*3600)
	e := Event(" n1 ", " api ", "z", Base.In(zone).Add(1234567*time.Nanosecond), metrics.LifecyclePaymentSettled, "0.25", 40)
	e.Directory = ""
	e.Billable, e.Countable = false, false
	require.NoError(t, s.Append(ctx, e))

	want, err := metrics.NormalizeUsageEvent(e)
	require.NoError(t, err)
	require.Equal(t, "n1", want.RequestID)
	require.True(t, want.Billable)
	require.True(t, want.Countable)
	require.Equal(t, "0.25", want.BilledUSD.String())
	require.Equal(t, 200, want.Status)
	require.Equal(t, time.UTC, want.Time.Location())

	got, err := s.Recent(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, eventJSON(t, []metrics.UsageEvent{want}), eventJSON(t, got))
	require.True(t, got[0].Time.Equal(Base.Add(1234*time.Microsecond)))
}

func testDedup(t *testing.T, s metrics.Store) {
	ctx := context.Background()
	first := Event("dup", "a", "x", Base, metrics.LifecyclePaymentSettled, "1", 5)
	other := Event("dup", "b", "y", Base.Add(time.Minute), metrics.LifecyclePaymentSettled, "2", 5)
	require.NoError(t, s.Append(ctx, first, other))
	require.NoError(t, s.Append(ctx, other))
	require.NoError(t, s.Append(ctx, Event("other", "a", "x", Base, metrics.LifecycleServed, "0", 5)))

	got, err := s.Recent(ctx, 10)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"dup", "other"}, ids(got))
	for _, e := range got {
		if e.RequestID == "dup" {
			require.Equal(t, "a", e.APIID, "the first event with a request id wins")
		}
	}
	rs, err := s.Rollups(ctx, metrics.RollupQuery{})
	require.NoError(t, err)
	require.Len(t, rs, 1)
	require.Equal(t, "a", rs[0].APIID)
	require.EqualValues(t, 2, rs[0].Calls)
	require.EqualValues(t, 1_000_000, rs[0].RevenueMicros)
}

func testInvalidBatch(t *testing.T, s metrics.Store) {
	ctx := context.Background()
	good := Event("g1", "a", "x", Base, metrics.LifecycleServed, "0", 5)
	bad := []metrics.UsageEvent{
		Event("", "a", "x", Base, metrics.LifecycleServed, "0", 5),
		Event("b2", "", "x", Base, metrics.LifecycleServed, "0", 5),
		Event("b3", "a", "x", time.Time{}, metrics.LifecycleServed, "0", 5),
		Event("b4", "a", "x", Base, "teleported", "0", 5),
		Event("b5", "a", "x", Base, metrics.LifecyclePaymentSettled, "-1", 5),
		Event("b6", "a", "x", Base, metrics.LifecyclePaymentSettled, "0.0000001", 5),
		Event("b7", "a", "x", Base, metrics.LifecycleServed, "0", -1),
	}
	for _, b := range bad {
		require.ErrorIs(t, s.Append(ctx, good, b), metrics.ErrInvalidEvent, "event %q", b.RequestID)
	}
	got, err := s.Recent(ctx, 10)
	require.NoError(t, err)
	require.Empty(t, got)
	rs, err := s.Rollups(ctx, metrics.RollupQuery{})
	require.NoError(t, err)
	require.Empty(t, rs)

	// The rejected batch did not burn the good event's request id.
	require.NoError(t, s.Append(ctx, good))
	got, err = s.Recent(ctx, 10)
	require.NoError(t, err)
	require.Equal(t, []string{"g1"}, ids(got))
}

func testBoundaries(t *testing.T, s metrics.Store) {
	ctx := context.Background()
	day := time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC)
	events := []metrics.UsageEvent{
		Event("h10", "a", "x", day.Add(11*time.Hour-time.Microsecond), metrics.LifecycleServed, "0", 5),
		Event("h11", "a", "x", day.Add(11*time.Hour), metrics.LifecycleServed, "0", 5),
		Event("h11b", "b", "x", day.Add(11*time.Hour+59*time.Minute), metrics.LifecycleServed, "0", 5),
		Event("d1end", "a", "x", day.Add(24*time.Hour-time.Second), metrics.LifecycleServed, "0", 5),
		Event("d2", "a", "x", day.Add(24*time.Hour), metrics.LifecycleServed, "0", 5),
	}
	require.NoError(t, s.Append(ctx, events...))

	type key struct {
		api  string
		hour time.Time
	}
	keys := func(rs []metrics.HourRollup) []key {
		out := make([]key, len(rs))
		for i, r := range rs {
			out[i] = key{r.APIID, r.Hour.UTC()}
			require.EqualValues(t, 1, r.Calls)
		}
		return out
	}
	h := func(n int) time.Time { return day.Add(time.Duration(n) * time.Hour) }
	tests := []struct {
		name string
		q    metrics.RollupQuery
		want []key
	}{
		{"all", metrics.RollupQuery{}, []key{{"a", h(10)}, {"a", h(11)}, {"b", h(11)}, {"a", h(23)}, {"a", h(24)}}},
		{"one hour", metrics.RollupQuery{From: h(11), To: h(12)}, []key{{"a", h(11)}, {"b", h(11)}}},
		{"from is inclusive", metrics.RollupQuery{From: h(10)}, []key{{"a", h(10)}, {"a", h(11)}, {"b", h(11)}, {"a", h(23)}, {"a", h(24)}}},
		{"to is exclusive", metrics.RollupQuery{To: h(11)}, []key{{"a", h(10)}}},
		{"first day", metrics.RollupQuery{From: day, To: h(24)}, []key{{"a", h(10)}, {"a", h(11)}, {"b", h(11)}, {"a", h(23)}}},
		{"second day", metrics.RollupQuery{From: h(24), To: h(48)}, []key{{"a", h(24)}}},
		{"empty range", metrics.RollupQuery{From: h(12), To: h(12)}, []key{}},
		{"nothing there", metrics.RollupQuery{From: h(100)}, []key{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := s.Rollups(ctx, tc.q)
			require.NoError(t, err)
			require.Equal(t, tc.want, append([]key{}, keys(rs)...))
		})
	}
	_, err := s.Rollups(ctx, metrics.RollupQuery{From: h(12), To: h(11)})
	require.ErrorIs(t, err, metrics.ErrInvalidQuery)
}

func testRollupContents(t *testing.T, s metrics.Store) {
	ctx := context.Background()
	at := func(min int) time.Time { return Base.Add(time.Duration(min) * time.Minute) }
	served500 := Event("e3", "a", "y", at(3), metrics.LifecycleServed, "0", 900)
	served500.Status = 500
	served404 := Event("e4", "a", "y", at(4), metrics.LifecycleServed, "0", 30)
	served404.Status = 404
	last := Event("e9", "a", "z", at(9), metrics.LifecycleRateLimited, "0", 1)
	last.Owner, last.Directory = "new-owner", "finance"
	events := []metrics.UsageEvent{
		Event("e1", "a", "x", at(1), metrics.LifecyclePaymentSettled, "0.000001", 10),
		Event("e2", "a", "x", at(2), metrics.LifecyclePaymentSettled, "0.1", 120),
		served500,
		served404,
		Event("e5", "a", "x", at(5), metrics.LifecycleWorkerError, "0.2", 5000),
		Event("e6", "a", "y", at(6), metrics.LifecyclePaymentSettlementFailed, "0.2", 80),
		Event("e7", "a", "w", at(7), metrics.LifecyclePaymentChallenged, "0.2", 2),
		Event("e8", "a", "w", at(8), metrics.LifecyclePaymentReplayed, "0.2", 2),
		last,
	}
	require.NoError(t, s.Append(ctx, events...))

	rs, err := s.Rollups(ctx, metrics.RollupQuery{})
	require.NoError(t, err)
	require.Len(t, rs, 1)
	r := rs[0]
	var lat metrics.LatencyHistogram
	for _, ms := range []int64{10, 120, 900, 30, 5000, 80} {
		lat.Observe(ms)
	}
	require.Equal(t, "a", r.APIID)
	require.True(t, r.Hour.Equal(Base))
	require.Equal(t, "new-owner", r.Owner)
	require.Equal(t, "finance", r.Directory)
	require.EqualValues(t, 9, r.Events)
	require.EqualValues(t, 6, r.Calls, "challenges, replays and refusals are not calls")
	require.EqualValues(t, 3, r.Errors, "5xx, worker_error and settlement failure; not 404")
	require.EqualValues(t, 100_001, r.RevenueMicros, "only settled payments")
	counts, exact := r.Callers.Counts()
	require.True(t, exact)
	require.Equal(t, map[string]int64{
		metrics.HashCaller("x"): 3,
		metrics.HashCaller("y"): 3,
	}, counts)
	require.Equal(t, lat, r.Latency)
}

func testExactRevenue(t *testing.T, s metrics.Store) {
	ctx := context.Background()
	var batch []metrics.UsageEvent
	for i := range 1000 {
		batch = append(batch, Event(fmt.Sprintf("m%d", i), "a", "x", Base.Add(time.Duration(i)*time.Second), metrics.LifecyclePaymentSettled, "0.001", 5))
	}
	for i := range 3 {
		batch = append(batch, Event(fmt.Sprintf("t%d", i), "a", "x", Base, metrics.LifecyclePaymentSettled, "0.1", 5))
	}
	batch = append(batch, Event("big", "a", "x", Base, metrics.LifecyclePaymentSettled, "123456.789012", 5))
	require.NoError(t, s.Append(ctx, batch...))
	rs, err := s.Rollups(ctx, metrics.RollupQuery{})
	require.NoError(t, err)
	var total int64
	for _, r := range rs {
		total += r.RevenueMicros
	}
	require.EqualValues(t, 1_000_000+300_000+123_456_789_012, total)
	require.Equal(t, "123458.089012", metrics.MicrosToUSD(total))
}

func testConcurrent(t *testing.T, s metrics.Store) {
	ctx := context.Background()
	const workers, perWorker, shared = 16, 150, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers*2)
	for w := range workers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				at := Base.Add(time.Duration(w*perWorker+i) * time.Second * 7)
				api := fmt.Sprintf("api-%d", i%5)
				batch := []metrics.UsageEvent{
					Event(fmt.Sprintf("w%d-%d", w, i), api, fmt.Sprintf("c%d", w), at, metrics.LifecyclePaymentSettled, "0.003", int64(i)),
				}
				if i < shared {
					// Every worker appends the same shared ids: exactly one wins.
					batch = append(batch, Event(fmt.Sprintf("shared-%d", i), "api-shared", fmt.Sprintf("c%d", w), Base, metrics.LifecyclePaymentSettled, "1", 1))
				}
				if err := s.Append(ctx, batch...); err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() { // readers race with the writers
			defer wg.Done()
			for range 20 {
				if _, err := s.Recent(ctx, 50); err != nil {
					errs <- err
					return
				}
				if _, err := s.Rollups(ctx, metrics.RollupQuery{}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	rs, err := s.Rollups(ctx, metrics.RollupQuery{})
	require.NoError(t, err)
	var calls, events, revenue, sharedCalls int64
	callers := map[string]int64{}
	for _, r := range rs {
		calls += r.Calls
		events += r.Events
		revenue += r.RevenueMicros
		if r.APIID == "api-shared" {
			sharedCalls += r.Calls
			continue
		}
		counts, exact := r.Callers.Counts()
		require.True(t, exact)
		for c, n := range counts {
			callers[c] += n
		}
	}
	require.EqualValues(t, workers*perWorker+shared, calls)
	require.EqualValues(t, workers*perWorker+shared, events)
	require.EqualValues(t, shared, sharedCalls)
	require.EqualValues(t, workers*perWorker*3_000+shared*1_000_000, revenue)
	require.Len(t, callers, workers)
	for _, n := range callers {
		require.EqualValues(t, perWorker, n)
	}
	got, err := s.Recent(ctx, 1000)
	require.NoError(t, err)
	require.Len(t, got, 1000)
}

func testScanner(t *testing.T, s metrics.Store) {
	sc, ok := s.(metrics.RollupScanner)
	if !ok {
		t.Skip("store is not a metrics.RollupScanner")
	}
	ctx := context.Background()
	tr := Traffic{Events: 2000, APIs: 7, Callers: 50, Hours: 30, Start: Base}
	require.NoError(t, tr.Fill(ctx, s, 100, nil))
	for _, q := range []metrics.RollupQuery{{}, {From: Base.Add(5 * time.Hour), To: Base.Add(9 * time.Hour)}} {
		want, err := s.Rollups(ctx, q)
		require.NoError(t, err)
		var got []metrics.HourRollup
		require.NoError(t, sc.ScanRollups(ctx, q, func(r *metrics.HourRollup) { got = append(got, r.Clone()) }))
		require.ElementsMatch(t, want, got)
	}
	require.ErrorIs(t, sc.ScanRollups(ctx, metrics.RollupQuery{From: Base, To: Base.Add(-time.Hour)}, func(*metrics.HourRollup) {}), metrics.ErrInvalidQuery)
}

// testSources checks that ClientNet and Payer are stored and returned, and
// that rollups count sources: the payer of a settled call, else the
// client network, else the caller id.
func testSources(t *testing.T, s metrics.Store) {
	ctx := context.Background()
	netA := metrics.HashClientNet(netip.MustParseAddr("198.51.100.1"))
	netB := metrics.HashClientNet(netip.MustParseAddr("2001:db8:7::1"))
	payer := metrics.HashPayer("0x00000000000000000000000000000000000000aa")
	with := func(e metrics.UsageEvent, net, payer string) metrics.UsageEvent {
		e.ClientNet, e.Payer = net, payer
		return e
	}
	at := func(sec int) time.Time { return Base.Add(time.Duration(sec) * time.Second) }
	events := []metrics.UsageEvent{
		// Three asserted ids from one network: one source.
		with(Event("s1", "a", "bot-1", at(1), metrics.LifecycleServed, "0", 5), netA, ""),
		with(Event("s2", "a", "bot-2", at(2), metrics.LifecycleServed, "0", 5), netA, ""),
		with(Event("s3", "a", "bot-3", at(3), metrics.LifecycleServed, "0", 5), netA, ""),
		// A settled payment counts its payer, whatever the network.
		with(Event("s4", "a", "payer", at(4), metrics.LifecyclePaymentSettled, "0.01", 5), netB, payer),
		with(Event("s5", "a", "payer", at(5), metrics.LifecyclePaymentSettled, "0.01", 5), netA, payer),
		// A failed settlement is not paid: its network counts.
		with(Event("s6", "a", "payer", at(6), metrics.LifecyclePaymentSettlementFailed, "0.01", 5), netB, payer),
		// Neither recorded: the caller id.
		Event("s7", "a", "legacy", at(7), metrics.LifecycleServed, "0", 5),
		// Refused: no call, no source.
		with(Event("s8", "a", "bot-9", at(8), metrics.LifecycleRateLimited, "0", 5), metrics.HashClientNet(netip.MustParseAddr("192.0.2.1")), ""),
	}
	require.NoError(t, s.Append(ctx, events...))

	got, err := s.Recent(ctx, 10)
	require.NoError(t, err)
	want := make([]metrics.UsageEvent, 0, len(events))
	for i := len(events) - 1; i >= 0; i-- {
		n, err := metrics.NormalizeUsageEvent(events[i])
		require.NoError(t, err)
		want = append(want, n)
	}
	require.Equal(t, eventJSON(t, want), eventJSON(t, got), "clientNet and payer are stored")

	rs, err := s.Rollups(ctx, metrics.RollupQuery{})
	require.NoError(t, err)
	require.Len(t, rs, 1)
	sources, exact := rs[0].Sources.Counts()
	require.True(t, exact)
	require.Equal(t, map[string]int64{netA: 3, payer: 2, netB: 1, metrics.HashCaller("legacy"): 1}, sources)
	callers, exact := rs[0].Callers.Counts()
	require.True(t, exact)
	require.Len(t, callers, 5, "bot-1..3, payer, legacy")
}

// testBoundedSets appends, over several calls, more distinct callers in
// one hour than metrics.ExactCallers: the stored caller set turns into a
// sketch that still estimates them within 3%, and merges with what later
// appends add.
func testBoundedSets(t *testing.T, s metrics.Store) {
	ctx := context.Background()
	const callers, batches = 3000, 3
	for b := range batches {
		var batch []metrics.UsageEvent
		for i := b; i < callers; i += batches {
			e := Event(fmt.Sprint("b", i), "a", fmt.Sprint("agent-", i), Base.Add(time.Duration(i)*time.Second), metrics.LifecycleServed, "0", 5)
			e.ClientNet = metrics.HashClientNet(netip.AddrFrom4([4]byte{10, 0, byte(i % 30), 1}))
			batch = append(batch, e)
		}
		// A busy caller in every batch.
		e := Event(fmt.Sprint("busy-", b), "a", "busy", Base.Add(time.Duration(b)*time.Second), metrics.LifecycleServed, "0", 5)
		e.ClientNet = metrics.HashClientNet(netip.MustParseAddr("10.0.0.1"))
		batch = append(batch, e, e) // the duplicate request id counts once
		require.NoError(t, s.Append(ctx, batch...))
	}
	rs, err := s.Rollups(ctx, metrics.RollupQuery{})
	require.NoError(t, err)
	require.Len(t, rs, 1)
	r := rs[0]
	require.EqualValues(t, callers+batches, r.Calls)
	require.False(t, r.Callers.Exact())
	require.InEpsilon(t, callers+1, r.Callers.Distinct(), 0.03)
	require.LessOrEqual(t, r.Callers.Entries(), metrics.HeavyHitters)
	require.True(t, r.Sources.Exact())
	require.Equal(t, 30, r.Sources.Distinct())
	require.EqualValues(t, callers/30+batches, r.Sources.MaxCalls())

	a, err := metrics.BuildMarketplaceAnalytics(ctx, s, metrics.AnalyticsOptions{Window: metrics.WindowOverall, Now: Base.Add(time.Hour)})
	require.NoError(t, err)
	require.Len(t, a.TopAPIs, 1)
	require.InEpsilon(t, callers+1, a.TopAPIs[0].UniqueCallers, 0.03)
	require.Equal(t, 30, a.TopAPIs[0].UniqueSources)
}
