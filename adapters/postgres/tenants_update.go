package postgres

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/402claw/dispatcher/ops"
	"github.com/402claw/dispatcher/tenant"
)

var _ ops.TenantUpdater = (*Store)(nil)

// UpdateTenants implements ops.TenantUpdater: in one transaction, under the
// advisory lock SaveTenants takes (so no replica's save or update
// interleaves), it reads the stored tenants, calls fn, validates its
// answer as tenant.NewDirectory does and replaces the stored tenants with
// it. When fn or the validation fails nothing is written.
func (s *Store) UpdateTenants(ctx context.Context, fn func(current []tenant.Tenant) ([]tenant.Tenant, error)) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", s.tq.lock); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, s.tq.load)
		if err != nil {
			return err
		}
		docs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		cur := make([]tenant.Tenant, 0, len(docs))
		if len(docs) > 0 {
			raw := []byte(`{"tenants":[`)
			for i, d := range docs {
				if i > 0 {
					raw = append(raw, ',')
				}
				raw = append(raw, d...)
			}
			dir, err := tenant.ParseDirectory(append(raw, "]}"...))
			if err != nil {
				return fmt.Errorf("the stored directory does not parse: %w", err)
			}
			cur = dir.Tenants()
		}
		next, err := fn(cur)
		if err != nil {
			return err
		}
		if _, err := tenant.NewDirectory(next); err != nil {
			return err
		}
		n := len(next)
		slugs, owners, out := make([]string, n), make([]string, n), make([]string, n)
		positions := make([]int32, n)
		for i := range next {
			doc, err := json.Marshal(&next[i])
			if err != nil {
				return fmt.Errorf("%s: %w", next[i].Slug, err)
			}
			slugs[i], owners[i], out[i], positions[i] = next[i].Slug, next[i].OwnerUserID, string(doc), int32(i)
		}
		if _, err := tx.Exec(ctx, s.tq.del); err != nil {
			return err
		}
		if n > 0 {
			if _, err := tx.Exec(ctx, s.tq.insert, slugs, positions, owners, out); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: update tenants: %w", err)
	}
	return nil
}
