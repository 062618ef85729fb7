package sqlite_test

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/adapters/sqlite"
	"github.com/402claw/dispatcher/metrics"
)

// serverEvent is a usage event as the example server emits one for a free
// request of loadgen's ratio mode: one API, a few hundred callers and
// client networks, and a request id from newID.
func serverEvent(i int, at time.Time, newID func() string) metrics.UsageEvent {
	ip := netip.AddrFrom4([4]byte{198, 18, byte(i % 80), byte(i%250 + 1)})
	return metrics.UsageEvent{
		Time:      at,
		RequestID: newID(),
		APIID:     "ratio-free",
		Endpoint:  "/ping",
		CallerID:  metrics.HashCaller(fmt.Sprint("caller-", i%200)),
		ClientNet: metrics.HashClientNet(ip),
		Status:    200,
		LatencyMs: 1,
		PriceUSD:  decimal.Zero,
		Lifecycle: metrics.LifecycleServed,
	}
}

// BenchmarkAppendServerBatches is the usage-event load of the example
// server under loadgen's ratio mode, on the recommended file DSN: batches
// of 400 events (about what the async sink's 100 ms linger gathers at
// 4,000 requests/s) appended to a store that already holds 100,000
// events. One op is one event; cpu-us/op is the process's CPU time per
// event. ids=v7 are the dispatcher's time-ordered request ids, which
// insert at the end of the request-id index; ids=v4 are random ones (a
// client's own X-Request-Id), each of which dirties a page of that index.
func BenchmarkAppendServerBatches(b *testing.B) {
	const batch = 400
	for _, ids := range []struct {
		name  string
		newID func() string
	}{
		{"v7", func() string { return uuid.Must(uuid.NewV7()).String() }},
		{"v4", uuid.NewString},
	} {
		b.Run("ids="+ids.name, func(b *testing.B) {
			ctx := context.Background()
			s, err := sqlite.New(openDB(b, filepath.Join(b.TempDir(), "events.db")))
			if err != nil {
				b.Fatal(err)
			}
			at := time.Now().UTC()
			buf := make([]metrics.UsageEvent, 0, 1000)
			for i := 0; i < 100_000; i += 1000 {
				buf = buf[:0]
				for j := range 1000 {
					buf = append(buf, serverEvent(i+j, at, ids.newID))
				}
				if err := s.Append(ctx, buf...); err != nil {
					b.Fatal(err)
				}
			}
			pool := make([]metrics.UsageEvent, b.N)
			for i := range pool {
				pool[i] = serverEvent(i, at, ids.newID)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0, ok := processCPU()
			for i := 0; i < b.N; i += batch {
				if err := s.Append(ctx, pool[i:min(i+batch, b.N)]...); err != nil {
					b.Fatal(err)
				}
			}
			if cpu1, ok1 := processCPU(); ok && ok1 {
				b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "cpu-us/op")
			}
		})
	}
}
