package memory_test

import (
	"testing"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/quota/quotatest"
)

func TestQuotaConformance(t *testing.T) {
	t.Parallel()
	quotatest.Run(t, func(t *testing.T) kv.Store { return memory.NewKV() })
}

// unbatchedKV hides the batch ability, so the quota suite also runs the
// one-by-one paths over this adapter.
type unbatchedKV struct{ kv.Store }

func TestQuotaConformanceWithoutBatch(t *testing.T) {
	t.Parallel()
	quotatest.Run(t, func(t *testing.T) kv.Store { return unbatchedKV{memory.NewKV()} })
}
