package payment_test

import (
	"database/sql"
	"net/http"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/adapters/sqlite"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/ledger"
)

// BenchmarkPaidStores serves exact-paid requests (a fresh EIP-3009
// payment each, the instant facilitator double) through the dispatcher
// with 32 in flight, on the memory KV and ledger and on one SQLite store
// for both, the example server's default. Everything a paid request
// writes is in it: the idempotency and authorization records, the
// counters and the spend hold, the settlement intent, the entry with its
// audit record. It reports cpu-ns/op (the process's CPU per paid request)
// and req/s; the SQLite side's cpu-ns/op over the memory side's is the
// paid path's storage overhead (DESIGN section 18 wants at most 1.5).
//
//	go test -run '^$' -bench PaidStores -benchtime 4000x -count 5 ./x402/payment/
func BenchmarkPaidStores(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B) (kv.Store, ledger.Store)
	}{
		{"memory", func(*testing.B) (kv.Store, ledger.Store) { return memory.NewKV(), memory.NewLedger() }},
		{"sqlite", func(b *testing.B) (kv.Store, ledger.Store) {
			db := openSQLite(b, filepath.Join(b.TempDir(), "paid.db"))
			s, err := sqlite.New(db)
			require.NoError(b, err)
			return s, s
		}},
	}
	for _, st := range stores {
		b.Run(st.name, func(b *testing.B) {
			kvs, ls := st.open(b)
			g := newSchemeBenchOn(b, true, kvs, ls)
			c := schemeBenchCases[0] // exact
			payments := g.sign(b, c, b.N)
			var next atomic.Int64
			b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
			b.ReportAllocs()
			b.ResetTimer()
			cpu0, cpuOK := benchProcessCPU()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					status, h := g.serve(c.path, payments[next.Add(1)-1])
					if status != http.StatusOK || h.Get("PAYMENT-RESPONSE") == "" {
						b.Errorf("status %d, %s", status, h.Get("PAYMENT-REQUIRED"))
						return
					}
				}
			})
			b.StopTimer()
			cpu1, _ := benchProcessCPU()
			if cpuOK {
				b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}

// openSQLite opens the file at path with the DSN the example server uses.
func openSQLite(b *testing.B, path string) *sql.DB {
	db, err := sql.Open("sqlite", "file:"+path+
		"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate")
	require.NoError(b, err)
	b.Cleanup(func() { _ = db.Close() })
	return db
}
