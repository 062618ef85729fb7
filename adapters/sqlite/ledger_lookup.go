package sqlite

import (
	"context"
	"fmt"

	"github.com/402claw/dispatcher/ledger"
)

var _ ledger.KeyLookup = (*Store)(nil)

// EntriesByKey implements ledger.KeyLookup over the unique
// (idempotency_key, tenant) index (migration 8).
func (s *Store) EntriesByKey(ctx context.Context, key string) ([]ledger.Entry, error) {
	var out []ledger.Entry
	err := s.read(ctx, func() error {
		out = []ledger.Entry{}
		rows, err := s.db.QueryContext(ctx, `SELECT `+entryColumns+` FROM ledger
			WHERE idempotency_key = ? ORDER BY time_us, rowid`, key)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			e, err := scanEntry(rows)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: entries by key: %w", err)
	}
	return out, nil
}
