package memory_test

import (
	"testing"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/ledger/ledgertest"
)

func TestLedgerConformance(t *testing.T) {
	t.Parallel()
	ledgertest.Run(t, func(t *testing.T) ledger.Store { return memory.NewLedger() })
}

func BenchmarkLedger(b *testing.B) {
	ledgertest.Benchmark(b, func(b *testing.B) ledger.Store { return memory.NewLedger() })
}
