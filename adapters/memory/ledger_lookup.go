package memory

import (
	"context"

	"github.com/402claw/dispatcher/ledger"
)

var _ ledger.KeyLookup = (*Ledger)(nil)

// EntriesByKey implements ledger.KeyLookup. It scans every entry (memory
// ledgers are small); the SQL adapters use an index.
func (s *Ledger) EntriesByKey(ctx context.Context, key string) ([]ledger.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := []ledger.Entry{}
	for _, e := range s.entries {
		if e.IdempotencyKey == key {
			out = append(out, e)
		}
	}
	return out, nil
}
