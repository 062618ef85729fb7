package memory_test

import (
	"testing"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/tenant/tenanttest"
)

func TestTenantsConformance(t *testing.T) {
	t.Parallel()
	tenanttest.Run(t, func(t *testing.T) tenant.Store { return memory.NewTenants() })
}

func BenchmarkTenants(b *testing.B) {
	tenanttest.Benchmark(b, func(b *testing.B) tenant.Store { return memory.NewTenants() })
}
