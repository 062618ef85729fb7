package memory_test

import (
	"testing"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/ops"
	"github.com/402claw/dispatcher/ops/opstest"
)

func TestOpsConformance(t *testing.T) {
	opstest.RunUsers(t, func(t *testing.T) ops.Users { return memory.NewUsers() })
	opstest.RunDatasets(t, func(t *testing.T) ops.Datasets { return memory.NewDatasets() })
	opstest.RunKeyLookup(t, func(t *testing.T) ledger.Store { return memory.NewLedger() })
}
