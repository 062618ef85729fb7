package metrics_test

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/metrics"
)

// Usage events flow from the request path through an AsyncSink into a
// store; analytics reads the store's hourly rollups.
func Example() {
	ctx := context.Background()
	clock := func() time.Time { return time.Date(2025, 3, 10, 18, 0, 0, 0, time.UTC) }

	store, err := memory.NewEvents(memory.EventsConfig{})
	if err != nil {
		panic(err)
	}
	sink, err := metrics.NewAsyncSink(store, metrics.AsyncSinkConfig{})
	if err != nil {
		panic(err)
	}

	// A busy, honest API: 60 paid calls from 30 agents over 6 hours.
	for i := range 60 {
		sink.Emit(metrics.UsageEvent{
			Time:      clock().Add(-time.Duration(i%6) * time.Hour),
			RequestID: fmt.Sprintf("w-%d", i),
			APIID:     "weather",
			Directory: "data",
			CallerID:  metrics.HashCaller(fmt.Sprintf("agent-%d", i%30)),
			LatencyMs: 80,
			PriceUSD:  decimal.RequireFromString("0.002"),
			Lifecycle: metrics.LifecyclePaymentSettled,
		})
	}
	// A gamed API: 90 calls from one agent within one hour.
	for i := range 90 {
		sink.Emit(metrics.UsageEvent{
			Time: clock(), RequestID: fmt.Sprintf("s-%d", i), APIID: "spam", Directory: "data",
			CallerID: metrics.HashCaller("bot"), LatencyMs: 20, Lifecycle: metrics.LifecycleServed,
		})
	}
	// Flush before reading (a server does this at shutdown).
	if err := sink.Close(ctx); err != nil {
		panic(err)
	}

	a, err := metrics.BuildMarketplaceAnalytics(ctx, store, metrics.AnalyticsOptions{Window: metrics.WindowToday, Now: clock()})
	if err != nil {
		panic(err)
	}
	fmt.Printf("agents=%d calls=%d revenue=$%s\n", a.Hero.ActiveAgents, a.Hero.Calls, a.Hero.RevenueUSD)
	for _, api := range a.TopAPIs {
		fmt.Printf("#%d %s calls=%d callers=%d revenue=$%s score=%.2f\n",
			api.Rank, api.APIID, api.Calls, api.UniqueCallers, api.RevenueUSD, api.Score)
	}
	// Output:
	// agents=31 calls=150 revenue=$0.12
	// #1 weather calls=60 callers=30 revenue=$0.12 score=8.28
	// #2 spam calls=90 callers=1 revenue=$0 score=0.70
}

// The trending score of the same traffic, with and without gaming signals.
func ExampleComputeTrendingScore() {
	organic := metrics.ScoreInputs{Calls: 70, UniqueSources: 35, MaxSourceCalls: 2, MaxHourCalls: 6}
	gamed := metrics.ScoreInputs{Calls: 90, UniqueSources: 1, MaxSourceCalls: 90, MaxHourCalls: 90}
	fmt.Println(metrics.ComputeTrendingScore(organic), metrics.ComputeTrendingScore(gamed))
	// Output: 7.4026 0.7191
}

// A caller set counts distinct callers exactly up to metrics.ExactCallers
// and estimates beyond; hourly sets merge into a window's.
func ExampleCallerSet() {
	var monday, tuesday metrics.CallerSet
	for i := range 600 {
		monday.Add(metrics.HashCaller(fmt.Sprint("agent-", i)), 1)
		tuesday.Add(metrics.HashCaller(fmt.Sprint("agent-", i+300)), 2)
	}
	var week metrics.CallerSet
	week.Merge(&monday)
	week.Merge(&tuesday)
	fmt.Println(week.Distinct(), week.Exact(), week.MaxCalls())
	// Output: 900 true 3
}

// Free calls count by client network: rotating agent ids from one /24 are
// one source for the trending score.
func ExampleHashClientNet() {
	a := metrics.HashClientNet(netip.MustParseAddr("198.51.100.7"))
	b := metrics.HashClientNet(netip.MustParseAddr("198.51.100.200"))
	c := metrics.HashClientNet(netip.MustParseAddr("203.0.113.7"))
	fmt.Println(a == b, a == c)
	// Output: true false
}
