package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/402claw/dispatcher/ledger"
)

var _ ledger.KeyLookup = (*Store)(nil)

// EntriesByKey implements ledger.KeyLookup over the ledger_idempotency_key
// index (migration 0004).
func (s *Store) EntriesByKey(ctx context.Context, key string) ([]ledger.Entry, error) {
	q := `SELECT ` + entryColumns + ` FROM ` + pgx.Identifier{s.schema, "ledger"}.Sanitize() +
		` WHERE idempotency_key = $1 ORDER BY time, pos`
	rows, err := s.pool.Query(ctx, q, key)
	if err != nil {
		return nil, fmt.Errorf("postgres: entries by key: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ledger.Entry, error) { return scanEntry(r) })
	if err != nil {
		return nil, fmt.Errorf("postgres: entries by key: %w", err)
	}
	if out == nil {
		out = []ledger.Entry{}
	}
	return out, nil
}
