package memory

import (
	"context"
	"fmt"
	"sync"

	"github.com/402claw/dispatcher/tenant"
)

var _ tenant.Store = (*Tenants)(nil)

// Tenants is a tenant.Store in memory, so that a gateway on the memory
// adapters keeps its directory in a store like any other (and an admin API
// that writes the store needs no special case). It is safe for concurrent
// use. It deep-copies on the way in and on the way out: neither the caller's
// tenants nor what LoadTenants returns share memory with the store.
type Tenants struct {
	mu      sync.RWMutex
	tenants []tenant.Tenant // sorted by slug, as tenant.NewDirectory holds them
}

// NewTenants returns an empty tenant store.
func NewTenants() *Tenants { return &Tenants{} }

// LoadTenants implements tenant.Store: copies of the stored tenants, sorted
// by slug.
func (s *Tenants) LoadTenants(ctx context.Context) ([]tenant.Tenant, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory: load tenants: %w", err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]tenant.Tenant, len(s.tenants))
	for i := range s.tenants {
		out[i] = s.tenants[i].Clone()
	}
	return out, nil
}

// SaveTenants implements tenant.Store: the set is validated (and normalised)
// by tenant.NewDirectory, then replaces the stored one in a single step under
// the lock. An invalid set returns an error wrapping
// tenant.ErrInvalidDirectory and changes nothing.
func (s *Tenants) SaveTenants(ctx context.Context, tenants []tenant.Tenant) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: save tenants: %w", err)
	}
	dir, err := tenant.NewDirectory(tenants)
	if err != nil {
		return fmt.Errorf("memory: save tenants: %w", err)
	}
	ts := dir.Tenants() // deep copies, owned by the store from here
	s.mu.Lock()
	s.tenants = ts
	s.mu.Unlock()
	return nil
}
