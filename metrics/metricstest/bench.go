package metricstest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/metrics"
)

// Traffic generates synthetic, deterministic usage events: Events events
// spread evenly over Hours hours from Start, across APIs APIs and Callers
// callers (Zipf-distributed, so a few callers are busy and most are not),
// with a mix of lifecycles, latencies and prices.
type Traffic struct {
	Events, APIs, Callers, Hours int
	Start                        time.Time
	// Offset is added to request ids, so that a second run of the same
	// traffic produces new events.
	Offset int
}

// Event returns the i-th event (0 <= i < Events).
func (tr Traffic) Event(i int) metrics.UsageEvent {
	r := rand.New(rand.NewPCG(uint64(i), uint64(tr.Offset)))
	span := time.Duration(tr.Hours) * time.Hour
	at := tr.Start.Add(time.Duration(int64(span) / int64(tr.Events) * int64(i)))
	api := r.IntN(tr.APIs)
	// Inverse-power sampling approximates Zipf without a shared source.
	caller := int(float64(tr.Callers) * r.Float64() * r.Float64() * r.Float64())
	lc, price := metrics.LifecycleServed, prices[0]
	switch n := r.IntN(100); {
	case n < 40:
		lc, price = metrics.LifecyclePaymentSettled, prices[api%len(prices)]
	case n < 45:
		lc = metrics.LifecyclePaymentChallenged
	case n < 47:
		lc = metrics.LifecycleWorkerError
	case n < 48:
		lc = metrics.LifecycleRateLimited
	}
	return metrics.UsageEvent{
		Time:      at,
		RequestID: fmt.Sprintf("req-%d-%d", tr.Offset, i),
		APIID:     apiIDs[api%len(apiIDs)] + fmt.Sprint(api),
		Endpoint:  "/v1/items",
		Owner:     fmt.Sprintf("owner-%d", api%17),
		Directory: directories[api%len(directories)],
		CallerID:  metrics.HashCaller(fmt.Sprint("agent-", caller)),
		LatencyMs: int64(20 + r.ExpFloat64()*150),
		PriceUSD:  price,
		Lifecycle: lc,
	}
}

var (
	apiIDs      = []string{"weather-", "stocks-", "geo-", "llm-", "csv-"}
	directories = []string{"data", "finance", "maps", "ai", "tools"}
	prices      = []decimal.Decimal{decimal.Zero, decimal.RequireFromString("0.001"), decimal.RequireFromString("0.01"), decimal.RequireFromString("0.05")}
)

// Fill appends the traffic's events to s in batches of batch, calling
// before(i) ahead of each batch when it is not nil (to move a clock).
func (tr Traffic) Fill(ctx context.Context, s metrics.Store, batch int, before func(i int)) error {
	buf := make([]metrics.UsageEvent, 0, batch)
	for i := 0; i < tr.Events; i += batch {
		if before != nil {
			before(i)
		}
		buf = buf[:0]
		for j := i; j < min(i+batch, tr.Events); j++ {
			buf = append(buf, tr.Event(j))
		}
		if err := s.Append(ctx, buf...); err != nil {
			return err
		}
	}
	return nil
}

// NewBenchStore returns a fresh, empty store for a benchmark.
type NewBenchStore func(b *testing.B) metrics.Store

// Benchmark is the suite's matching benchmark: Append throughput (per
// event, in batches of 100) and BuildMarketplaceAnalytics over a store
// filled with 100,000 events (50 APIs, 2,000 callers, 14 days).
func Benchmark(b *testing.B, newStore NewBenchStore) {
	ctx := context.Background()
	b.Run("Append", func(b *testing.B) {
		s := newStore(b)
		// Events are generated ahead, so the figure is the store's cost
		// (plus one small request-id string per event).
		const poolSize = 1 << 16
		tr := Traffic{Events: poolSize, APIs: 50, Callers: 2000, Hours: 14 * 24, Start: Base}
		pool := make([]metrics.UsageEvent, poolSize)
		for i := range pool {
			pool[i] = tr.Event(i)
		}
		batch := make([]metrics.UsageEvent, 0, 100)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; {
			batch = batch[:0]
			for ; len(batch) < 100 && i < b.N; i++ {
				e := pool[i%poolSize]
				e.RequestID = "b" + strconv.Itoa(i)
				batch = append(batch, e)
			}
			if err := s.Append(ctx, batch...); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Analytics", func(b *testing.B) {
		s := newStore(b)
		tr := Traffic{Events: 100_000, APIs: 50, Callers: 2000, Hours: 14 * 24, Start: Base}
		if err := tr.Fill(ctx, s, 500, nil); err != nil {
			b.Fatal(err)
		}
		end := Base.Add(14 * 24 * time.Hour)
		for _, w := range []metrics.Window{metrics.WindowToday, metrics.WindowWeek, metrics.WindowOverall} {
			b.Run(string(w), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := metrics.BuildMarketplaceAnalytics(ctx, s, metrics.AnalyticsOptions{Window: w, Now: end}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	})
}
