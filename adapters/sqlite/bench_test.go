package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/402claw/dispatcher/adapters/sqlite"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/kv/kvtest"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/ledger/ledgertest"
	"github.com/402claw/dispatcher/quota/quotatest"
)

// go test -run '^$' -bench . -benchtime 2s ./adapters/sqlite/

func BenchmarkLedger(b *testing.B) {
	ledgertest.Benchmark(b, func(b *testing.B) ledger.Store { return newStore(b) })
}

// BenchmarkLedgerSyncFull is BenchmarkLedger with synchronous(FULL): every
// commit is fsynced, so settlements also survive a power loss.
func BenchmarkLedgerSyncFull(b *testing.B) {
	const full = "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)"
	ledgertest.Benchmark(b, func(b *testing.B) ledger.Store {
		s, err := sqlite.New(openDB(b, filepath.Join(b.TempDir(), "full.db"), full))
		if err != nil {
			b.Fatal(err)
		}
		return s
	})
}

func BenchmarkKV(b *testing.B) {
	kvtest.Benchmark(b, func(b *testing.B) kv.Store { return newStore(b) })
}

// BenchmarkHandles runs concurrent writers over 4 handles on one file, as 4
// gateway processes would: they contend through SQLite's file locks.
func BenchmarkHandles(b *testing.B) {
	open := func(b *testing.B) []*sqlite.Store {
		path := filepath.Join(b.TempDir(), "shared.db")
		stores := make([]*sqlite.Store, 4)
		for i := range stores {
			s, err := sqlite.New(openDB(b, path))
			if err != nil {
				b.Fatal(err)
			}
			stores[i] = s
		}
		return stores
	}
	b.Run("Settlement", func(b *testing.B) {
		stores := open(b)
		ctx := context.Background()
		base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		var worker, next atomic.Int64
		b.SetParallelism(8)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			s := stores[worker.Add(1)%int64(len(stores))]
			for pb.Next() {
				e := ledgertest.Entry("bench", fmt.Sprint(next.Add(1)), base)
				if _, err := s.AppendSettlement(ctx, e, ledgertest.Record(b, e)); err != nil {
					b.Error(err)
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "settlements/s")
	})
	b.Run("Incr", func(b *testing.B) {
		stores := open(b)
		ctx := context.Background()
		var worker atomic.Int64
		b.SetParallelism(8)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			s := stores[worker.Add(1)%int64(len(stores))]
			for pb.Next() {
				if _, _, err := s.Incr(ctx, "hot", kv.Increment{Delta: 1, Max: kv.Unbounded, TTL: time.Hour}); err != nil {
					b.Error(err)
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "incr/s")
	})
}

func BenchmarkQuotaCheck(b *testing.B) {
	quotatest.Benchmark(b, func(b *testing.B) kv.Store { return newStore(b) })
}
