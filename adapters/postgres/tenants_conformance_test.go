package postgres_test

import (
	"testing"

	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/tenant/tenanttest"
)

// The tenants table keeps each tenant as its JSON document (parsed back by
// tenant.ParseDirectory), so routes, schemes, cookies and discovery
// documents need no migration: the suite's round trip proves they survive.
func TestTenantsConformance(t *testing.T) {
	t.Parallel()
	tenanttest.Run(t, func(t *testing.T) tenant.Store {
		s, _, _ := newStore(t)
		return s
	})
}

func BenchmarkTenants(b *testing.B) {
	tenanttest.Benchmark(b, func(b *testing.B) tenant.Store {
		s, _, _ := newStore(b)
		return s
	})
}
