package memory_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/metrics/metricstest"
)

func BenchmarkEvents(b *testing.B) {
	metricstest.Benchmark(b, func(b *testing.B) metrics.Store {
		s, err := memory.NewEvents(memory.EventsConfig{})
		require.NoError(b, err)
		return s
	})
}

// scaleStore fills a store with tr, moving the store's clock with the
// events' times so request ids age out of the dedup set as they would in
// production.
func scaleStore(tb testing.TB, trs ...metricstest.Traffic) (*memory.Events, time.Duration) {
	tb.Helper()
	var clock time.Time
	s, err := memory.NewEvents(memory.EventsConfig{Now: func() time.Time { return clock }})
	require.NoError(tb, err)
	start := time.Now()
	for k, tr := range trs {
		span := time.Duration(tr.Hours) * time.Hour
		base := tr.Start.Add(time.Duration(k) * span)
		require.NoError(tb, tr.Fill(context.Background(), s, 256, func(i int) {
			clock = base.Add(time.Duration(int64(span) / int64(tr.Events) * int64(i)))
		}))
	}
	return s, time.Since(start)
}

// BenchmarkAnalyticsScale measures BuildMarketplaceAnalytics(window=week)
// over rollups built from growing numbers of events. With the (API, hour,
// caller) space fixed, the cost stays flat as events grow; it grows with
// APIs x hours.
func BenchmarkAnalyticsScale(b *testing.B) {
	ctx := context.Background()
	cases := []struct {
		events, apis, hours int
	}{
		{100_000, 100, 14 * 24},
		{1_000_000, 100, 14 * 24},
		{1_000_000, 25, 14 * 24},
		{1_000_000, 400, 14 * 24},
	}
	for _, c := range cases {
		tr := metricstest.Traffic{Events: c.events, APIs: c.apis, Callers: 5000, Hours: c.hours, Start: metricstest.Base}
		s, _ := scaleStore(b, tr)
		end := tr.Start.Add(time.Duration(c.hours) * time.Hour)
		b.Run(fmt.Sprintf("events=%d/apis=%d/hours=%d", c.events, c.apis, c.hours), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := metrics.BuildMarketplaceAnalytics(ctx, s, metrics.AnalyticsOptions{Window: metrics.WindowWeek, Now: end}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func heapMB() float64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / (1 << 20)
}
