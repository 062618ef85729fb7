package sqlite_test

import (
	"testing"

	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/kv/kvtest"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/ledger/ledgertest"
)

// The kv suite checks expiry with real 50 ms TTLs, so it does not run in
// parallel with this package's heavy multi-handle tests (a loaded machine
// under -race could otherwise let a TTL lapse between two calls).
func TestKVConformance(t *testing.T) {
	kvtest.Run(t, func(t *testing.T) kv.Store { return newStore(t) })
}

// TestKVReplicas runs the across-replica suite over several handles on one
// file (see handles), standing in for several processes.
func TestKVReplicas(t *testing.T) {
	t.Parallel()
	kvtest.RunReplicas(t, func(t *testing.T, n int) []kv.Store {
		var stores []kv.Store
		for _, s := range handles(t, n) {
			stores = append(stores, s)
		}
		return stores
	})
}

// plainKV hides the batch ability so the suite also runs kv.IncrAll's
// one-by-one fallback over SQLite.
type plainKV struct{ kv.Store }

func TestKVConformanceWithoutBatch(t *testing.T) {
	kvtest.Run(t, func(t *testing.T) kv.Store { return plainKV{newStore(t)} })
}

func TestLedgerConformance(t *testing.T) {
	t.Parallel()
	ledgertest.Run(t, func(t *testing.T) ledger.Store { return newStore(t) })
}
