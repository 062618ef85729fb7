package ledger

import (
	"context"
	"errors"
	"fmt"
	"sort"
)

// ErrUnsupported is returned by Ledger.EntriesByKey when the store has no
// KeyLookup ability.
var ErrUnsupported = errors.New("ledger: the store cannot look entries up by key alone")

// KeyLookup is an optional ability of a Store: finding entries by
// idempotency key across every tenant, which the payment status route uses
// (a payer knows the key, not necessarily the tenant's slug). Adapters
// serve it from an index on the key.
type KeyLookup interface {
	// EntriesByKey returns every entry whose idempotency key is exactly
	// key, whatever its tenant, oldest first; none is an empty slice and
	// no error.
	EntriesByKey(ctx context.Context, key string) ([]Entry, error)
}

// EntriesByKey returns the entries with idempotency key key across all
// tenants, oldest first (ties broken by tenant). It returns an error
// matching ErrInvalid for an empty key or one longer than MaxKeyLen, and
// ErrUnsupported when the store does not implement KeyLookup.
func (l *Ledger) EntriesByKey(ctx context.Context, key string) ([]Entry, error) {
	if key == "" || len(key) > MaxKeyLen {
		return nil, invalidf("lookup: idempotency key must be 1 to %d bytes", MaxKeyLen)
	}
	kl, ok := l.store.(KeyLookup)
	if !ok {
		return nil, ErrUnsupported
	}
	es, err := kl.EntriesByKey(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("ledger: entries by key: %w", err)
	}
	sort.SliceStable(es, func(i, j int) bool {
		if !es[i].Time.Equal(es[j].Time) {
			return es[i].Time.Before(es[j].Time)
		}
		return es[i].Tenant < es[j].Tenant
	})
	return es, nil
}
