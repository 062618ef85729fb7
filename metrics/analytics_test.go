package metrics_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/metrics/metricstest"
)

// day is a Monday; now is late in that day.
var (
	day = time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC)
	now = day.Add(23*time.Hour + 30*time.Minute)
)

// traffic describes synthetic calls to one API.
type traffic struct {
	api       string
	calls     int
	callers   int // calls go round-robin to this many callers
	hours     int // and are spread evenly over this many hours from start
	start     time.Time
	price     string
	latencyMs int64
	slowEvery int // every slowEvery-th call takes slowMs (0: none)
	slowMs    int64
	failEvery int // every failEvery-th call is a worker error (0: none)
	directory string
}

func (tr traffic) events() []metrics.UsageEvent {
	if tr.start.IsZero() {
		tr.start = day.Add(8 * time.Hour)
	}
	if tr.price == "" {
		tr.price = "0"
	}
	out := make([]metrics.UsageEvent, 0, tr.calls)
	for i := range tr.calls {
		lc := metrics.LifecycleServed
		if tr.price != "0" {
			lc = metrics.LifecyclePaymentSettled
		}
		if tr.failEvery > 0 && i%tr.failEvery == 0 {
			lc = metrics.LifecycleWorkerError
		}
		lat := tr.latencyMs
		if tr.slowEvery > 0 && i%tr.slowEvery == 0 {
			lat = tr.slowMs
		}
		at := tr.start.Add(time.Duration(i%tr.hours)*time.Hour + time.Duration(i)*time.Second)
		e := metricstest.Event(fmt.Sprintf("%s-%d", tr.api, i), tr.api, fmt.Sprintf("%s-caller-%d", tr.api, i%tr.callers), at, lc, tr.price, lat)
		if tr.directory != "" {
			e.Directory = tr.directory
		}
		out = append(out, e)
	}
	return out
}

func newStore(t testing.TB, traffics ...traffic) *memory.Events {
	t.Helper()
	s, err := memory.NewEvents(memory.EventsConfig{})
	require.NoError(t, err)
	for _, tr := range traffics {
		require.NoError(t, s.Append(context.Background(), tr.events()...))
	}
	return s
}

func ranking(t *testing.T, s metrics.Store, w metrics.Window) []string {
	t.Helper()
	a, err := metrics.BuildMarketplaceAnalytics(context.Background(), s, metrics.AnalyticsOptions{Window: w, Now: now, Top: metrics.MaxTop})
	require.NoError(t, err)
	var ids []string
	for i, r := range a.TopAPIs {
		require.Equal(t, i+1, r.Rank)
		ids = append(ids, r.APIID)
	}
	return ids
}

func TestTrendingRanking(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		traffics []traffic
		want     []string
	}{
		{
			name: "one caller in one hour ranks below many callers over many hours",
			traffics: []traffic{
				{api: "spam", calls: 90, callers: 1, hours: 1, latencyMs: 40},
				{api: "organic", calls: 70, callers: 35, hours: 12, latencyMs: 40, start: day.Add(6 * time.Hour)},
			},
			want: []string{"organic", "spam"},
		},
		{
			name: "same gaming with revenue: the paid spam still loses",
			traffics: []traffic{
				{api: "spam", calls: 90, callers: 1, hours: 1, latencyMs: 40, price: "0.01"},
				{api: "organic", calls: 70, callers: 35, hours: 12, latencyMs: 40, price: "0.01", start: day.Add(6 * time.Hour)},
			},
			want: []string{"organic", "spam"},
		},
		{
			name: "a high error rate sinks a bigger API",
			traffics: []traffic{
				{api: "flaky", calls: 200, callers: 60, hours: 10, latencyMs: 40, failEvery: 2},
				{api: "solid", calls: 80, callers: 30, hours: 10, latencyMs: 40},
			},
			want: []string{"solid", "flaky"},
		},
		{
			name: "a p95 of several seconds ranks below an equal fast API",
			traffics: []traffic{
				{api: "slow", calls: 100, callers: 40, hours: 10, latencyMs: 40, slowEvery: 10, slowMs: 4000},
				{api: "fast", calls: 100, callers: 40, hours: 10, latencyMs: 40, slowEvery: 10, slowMs: 120},
			},
			want: []string{"fast", "slow"},
		},
		{
			name: "revenue is rewarded",
			traffics: []traffic{
				{api: "free", calls: 100, callers: 40, hours: 10, latencyMs: 40},
				{api: "paid", calls: 100, callers: 40, hours: 10, latencyMs: 40, price: "0.05"},
			},
			want: []string{"paid", "free"},
		},
		{
			name: "equal traffic ties break by apiId",
			traffics: []traffic{
				{api: "zeta", calls: 50, callers: 10, hours: 5, latencyMs: 40},
				{api: "alpha", calls: 50, callers: 10, hours: 5, latencyMs: 40},
				{api: "mid", calls: 50, callers: 10, hours: 5, latencyMs: 40},
			},
			want: []string{"alpha", "mid", "zeta"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, tc.traffics...)
			for _, w := range []metrics.Window{metrics.WindowToday, metrics.WindowWeek, metrics.WindowOverall} {
				for range 3 { // deterministic across builds
					require.Equal(t, tc.want, ranking(t, s, w), "window %s", w)
				}
			}
		})
	}
}

func TestComputeTrendingScore(t *testing.T) {
	t.Parallel()
	base := metrics.ScoreInputs{Calls: 70, UniqueSources: 35, MaxSourceCalls: 2, MaxHourCalls: 6, P95LatencyMs: 50}
	with := func(f func(*metrics.ScoreInputs)) metrics.ScoreInputs { in := base; f(&in); return in }
	gamed := metrics.ScoreInputs{Calls: 90, UniqueSources: 1, MaxSourceCalls: 90, MaxHourCalls: 90, P95LatencyMs: 50}

	score := metrics.ComputeTrendingScore
	require.Zero(t, score(metrics.ScoreInputs{}))
	require.Greater(t, score(base), 5*score(gamed))
	require.InDelta(t, 0.72, score(with(func(in *metrics.ScoreInputs) { *in = gamed; in.P95LatencyMs = 0 })), 0.01)
	require.InDelta(t, 7.4, score(with(func(in *metrics.ScoreInputs) { in.P95LatencyMs = 0 })), 0.05)

	// Each signal moves the score the documented way.
	require.Greater(t, score(with(func(in *metrics.ScoreInputs) { in.Calls = 140; in.MaxHourCalls = 12; in.MaxSourceCalls = 4 })), score(base))
	require.Greater(t, score(with(func(in *metrics.ScoreInputs) { in.RevenueMicros = 700_000 })), score(base))
	require.Greater(t, score(with(func(in *metrics.ScoreInputs) { in.UniqueSources = 50 })), score(base))
	require.InDelta(t, score(base)/4, score(with(func(in *metrics.ScoreInputs) { in.Errors = 35 })), 0.001)
	require.Less(t, score(with(func(in *metrics.ScoreInputs) { in.P95LatencyMs = 3000 })), score(base)/2)
	require.Less(t, score(with(func(in *metrics.ScoreInputs) { in.MaxSourceCalls = 60 })), score(base))
	require.Less(t, score(with(func(in *metrics.ScoreInputs) { in.MaxHourCalls = 70 })), score(base))
	require.Zero(t, score(with(func(in *metrics.ScoreInputs) { in.Errors = 70 })))
}

func TestRankedTieBreaks(t *testing.T) {
	t.Parallel()
	// Hand-built rollups with identical figures; only apiId differs.
	var rs []metrics.HourRollup
	for _, api := range []string{"c", "a", "b"} {
		r := metrics.NewHourRollup(api, now)
		r.Calls, r.Events = 10, 10
		r.Callers.Add("x", 5)
		r.Callers.Add("y", 5)
		r.Sources.Add("x", 5)
		r.Sources.Add("y", 5)
		r.Latency.Observe(10)
		rs = append(rs, r)
	}
	snap, err := metrics.BuildWindowSnapshot(metrics.WindowToday, now, rs, nil)
	require.NoError(t, err)
	var got []string
	for _, r := range snap.Ranked() {
		got = append(got, r.APIID)
	}
	require.Equal(t, []string{"a", "b", "c"}, got)
}

func TestBuildMarketplaceAnalytics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t,
		// Today.
		traffic{api: "weather", calls: 40, callers: 20, hours: 8, latencyMs: 80, price: "0.002", directory: "data"},
		traffic{api: "stocks", calls: 10, callers: 5, hours: 2, latencyMs: 200, price: "0.1", directory: "finance"},
		// Three days ago: in week and overall only.
		traffic{api: "weather-old", calls: 30, callers: 3, hours: 3, latencyMs: 80, directory: "data", start: day.AddDate(0, 0, -3)},
		// Seven days ago: overall only.
		traffic{api: "ancient", calls: 5, callers: 5, hours: 1, latencyMs: 80, directory: "misc", start: day.AddDate(0, 0, -7).Add(23 * time.Hour)},
	)
	// A challenge is an event but not a call; a future event is ignored.
	challenge := metricstest.Event("challenge", "stocks", "someone", now, metrics.LifecyclePaymentChallenged, "0.1", 1)
	future := metricstest.Event("future", "stocks", "someone", now.Add(2*time.Hour), metrics.LifecycleServed, "0", 1)
	challenge.Directory, future.Directory = "finance", "finance"
	require.NoError(t, s.Append(ctx, challenge, future))
	published := []metrics.APIInfo{{APIID: "idle", Directory: "tools"}, {APIID: "weather", Directory: "weather"}}

	tests := []struct {
		window      metrics.Window
		top         int
		hero        metrics.Hero
		topIDs      []string
		directories []string
	}{
		{metrics.WindowToday, 0, metrics.Hero{ActiveAgents: 25, PublishedAPIs: 3, Directories: 3, Calls: 50, RevenueUSD: "1.08"},
			[]string{"weather", "stocks"}, []string{"weather", "finance", "tools"}},
		{metrics.WindowWeek, 1, metrics.Hero{ActiveAgents: 28, PublishedAPIs: 4, Directories: 4, Calls: 80, RevenueUSD: "1.08"},
			[]string{"weather"}, []string{"weather", "data", "finance", "tools"}},
		{metrics.WindowOverall, 25, metrics.Hero{ActiveAgents: 33, PublishedAPIs: 5, Directories: 5, Calls: 85, RevenueUSD: "1.08"},
			[]string{"weather", "stocks", "weather-old", "ancient"}, []string{"weather", "data", "finance", "misc", "tools"}},
	}
	for _, tc := range tests {
		t.Run(string(tc.window), func(t *testing.T) {
			a, err := metrics.BuildMarketplaceAnalytics(ctx, s, metrics.AnalyticsOptions{Window: tc.window, Top: tc.top, Now: now, Published: published})
			require.NoError(t, err)
			require.Equal(t, tc.window, a.Window)
			require.Equal(t, now, a.GeneratedAt)
			require.Equal(t, tc.hero, a.Hero)
			var ids, dirs []string
			for _, r := range a.TopAPIs {
				ids = append(ids, r.APIID)
			}
			for _, d := range a.Directories {
				dirs = append(dirs, d.Directory)
			}
			require.Equal(t, tc.topIDs, ids)
			require.Equal(t, tc.directories, dirs)
		})
	}

	a, err := metrics.BuildMarketplaceAnalytics(ctx, s, metrics.AnalyticsOptions{Window: metrics.WindowToday, Now: now, Published: published})
	require.NoError(t, err)
	w := a.TopAPIs[0]
	require.Equal(t, "weather", w.Directory, "the published directory wins")
	require.Equal(t, "0.08", w.RevenueUSD)
	require.EqualValues(t, 40, w.Calls)
	require.Equal(t, 20, w.UniqueCallers)
	require.EqualValues(t, 100, w.P95LatencyMs)
	require.Zero(t, w.ErrorRate)
	st := a.TopAPIs[1]
	require.Equal(t, "1", st.RevenueUSD)
	require.EqualValues(t, 10, st.Calls, "the challenge and the future event are not counted")
	require.Equal(t, 0.5, st.MaxHourShare)
	require.Equal(t, 0.2, st.MaxCallerShare)
	require.Equal(t, metrics.DirectoryRow{Directory: "tools", RevenueUSD: "0", APIs: 1}, a.Directories[2])
	require.Equal(t, "weather", a.Directories[0].TopAPIID)

	_, err = metrics.BuildMarketplaceAnalytics(ctx, s, metrics.AnalyticsOptions{Window: "month", Now: now})
	require.ErrorIs(t, err, metrics.ErrInvalidQuery)
	_, err = metrics.BuildMarketplaceAnalytics(ctx, s, metrics.AnalyticsOptions{Now: now})
	require.ErrorIs(t, err, metrics.ErrInvalidQuery)
}

func TestAnalyticsJSONShape(t *testing.T) {
	t.Parallel()
	s := newStore(t, traffic{api: "weather", calls: 3, callers: 2, hours: 1, price: "0.5"})
	a, err := metrics.BuildMarketplaceAnalytics(context.Background(), s, metrics.AnalyticsOptions{Window: metrics.WindowWeek, Now: now})
	require.NoError(t, err)
	b, err := json.Marshal(a)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	require.ElementsMatch(t, []string{"window", "generatedAt", "hero", "topApis", "directories"}, keys(m))
	require.Equal(t, "week", m["window"])
	require.Equal(t, "2025-03-10T23:30:00Z", m["generatedAt"])
	hero := m["hero"].(map[string]any)
	require.ElementsMatch(t, []string{"activeAgents", "publishedApis", "directories", "calls", "revenueUsd"}, keys(hero))
	require.Equal(t, "1.5", hero["revenueUsd"])
	row := m["topApis"].([]any)[0].(map[string]any)
	for _, k := range []string{"rank", "apiId", "directory", "calls", "uniqueCallers", "revenueUsd", "errorRate", "p95LatencyMs", "score"} {
		require.Contains(t, row, k)
	}
	require.Equal(t, "1.5", row["revenueUsd"])
	require.EqualValues(t, 1, row["rank"])

	// No traffic at all: empty arrays, not null.
	empty := newStore(t)
	a, err = metrics.BuildMarketplaceAnalytics(context.Background(), empty, metrics.AnalyticsOptions{Window: metrics.WindowToday, Now: now})
	require.NoError(t, err)
	b, err = json.Marshal(a)
	require.NoError(t, err)
	require.Contains(t, string(b), `"topApis":[]`)
	require.Contains(t, string(b), `"directories":[]`)
	require.Contains(t, string(b), `"revenueUsd":"0"`)
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestWindowRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		window   metrics.Window
		now      time.Time
		from, to time.Time
	}{
		{metrics.WindowToday, now, day, day.Add(24 * time.Hour)},
		{metrics.WindowToday, day, day, day.Add(time.Hour)},
		{metrics.WindowToday, day.Add(-time.Nanosecond), day.AddDate(0, 0, -1), day},
		{metrics.WindowWeek, now, day.AddDate(0, 0, -6), day.Add(24 * time.Hour)},
		{metrics.WindowWeek, time.Date(2025, 3, 3, 5, 0, 0, 0, time.UTC), time.Date(2025, 2, 25, 0, 0, 0, 0, time.UTC), time.Date(2025, 3, 3, 6, 0, 0, 0, time.UTC)},
		{metrics.WindowOverall, now, time.Time{}, day.Add(24 * time.Hour)},
		// A non-UTC clock is converted: 01:30+05:00 is 20:30 UTC the day before.
		{metrics.WindowToday, time.Date(2025, 3, 11, 1, 30, 0, 0, time.FixedZone("X", 5*3600)), day, day.Add(21 * time.Hour)},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s@%s", tc.window, tc.now.Format(time.RFC3339)), func(t *testing.T) {
			q := tc.window.Range(tc.now)
			require.True(t, q.From.Equal(tc.from), "from %s", q.From)
			require.True(t, q.To.Equal(tc.to), "to %s", q.To)
		})
	}
}

// A store without the RollupScanner ability gives the same analytics
// through Rollups.
func TestAnalyticsWithoutScanner(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	tr := metricstest.Traffic{Events: 5000, APIs: 9, Callers: 300, Hours: 24 * 9, Start: day.AddDate(0, 0, -8)}
	require.NoError(t, tr.Fill(context.Background(), s, 250, nil))
	plain := &fakeStore{Store: s}
	for _, w := range []metrics.Window{metrics.WindowToday, metrics.WindowWeek, metrics.WindowOverall} {
		opt := metrics.AnalyticsOptions{Window: w, Now: now, Top: 100}
		want, err := metrics.BuildMarketplaceAnalytics(context.Background(), s, opt)
		require.NoError(t, err)
		got, err := metrics.BuildMarketplaceAnalytics(context.Background(), plain, opt)
		require.NoError(t, err)
		require.Equal(t, want, got)
		require.NotEmpty(t, got.TopAPIs)
	}
}
