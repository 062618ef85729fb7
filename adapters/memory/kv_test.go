package memory_test

import (
	"context"

	"github.com/stretchr/testify/require"
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

func TestKVReplicas(t *testing.T) {
	t.Parallel()
	kvtest.RunReplicas(t, func(t *testing.T, n int) []kv.Store {
		s := memory.NewKV()
		stores := make([]kv.Store, n)
		for i := range stores {
			stores[i] = s
		}
		return stores
	})
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

func TestIncrAllReadsCreateNoKeys(t *testing.T) {
	t.Parallel()
	s := memory.NewKV()
	_, refused, err := s.IncrAll(context.Background(), []string{"{a}:d", "{a}:m"}, []kv.Increment{{Max: kv.Unbounded}, {Max: kv.Unbounded}})
	require.NoError(t, err)
	require.Equal(t, -1, refused)
	require.Equal(t, 0, s.Len(), "a read leaves absent keys absent")
}
