package memory_test

import (
	"testing"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/kv/kvtest"
	"github.com/402claw/dispatcher/quota/quotatest"
)

func TestKVConformance(t *testing.T) {
	t.Parallel()
	kvtest.Run(t, func(t *testing.T) kv.Store { return memory.NewKV() })
}

// plainKV hides the batch ability so the suite also checks kv.IncrAll's
// one-by-one fallback.
type plainKV struct{ kv.Store }

func TestKVConformanceWithoutBatch(t *testing.T) {
	t.Parallel()
	kvtest.Run(t, func(t *testing.T) kv.Store { return plainKV{memory.NewKV()} })
}

func BenchmarkKV(b *testing.B) {
	kvtest.Benchmark(b, func(b *testing.B) kv.Store { return memory.NewKV() })
}

func BenchmarkQuotaCheck(b *testing.B) {
	quotatest.Benchmark(b, func(b *testing.B) kv.Store { return memory.NewKV() })
}
