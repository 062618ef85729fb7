package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/402claw/dispatcher/ops"
	"github.com/402claw/dispatcher/tenant"
)

var _ ops.TenantUpdater = (*Store)(nil)

// UpdateTenants implements ops.TenantUpdater: in one immediate transaction
// (which excludes every other writer, in any process) it reads the stored
// tenants, calls fn, validates its answer as tenant.NewDirectory does and
// stores it as SaveTenants would. When fn or the validation fails nothing
// is written and the error is returned.
func (s *Store) UpdateTenants(ctx context.Context, fn func(current []tenant.Tenant) ([]tenant.Tenant, error)) error {
	err := s.writeTx(ctx, func(q querier) error {
		rows, err := q.QueryContext(ctx, `SELECT slug, doc FROM tenants ORDER BY slug`)
		if err != nil {
			return err
		}
		var cur []tenant.Tenant
		for rows.Next() {
			var slug, doc string
			if err := rows.Scan(&slug, &doc); err != nil {
				rows.Close()
				return err
			}
			t, err := decodeTenant(doc)
			if err != nil {
				rows.Close()
				return fmt.Errorf("tenant %q: %w", slug, err)
			}
			cur = append(cur, t)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		next, err := fn(cur)
		if err != nil {
			return err
		}
		dir, err := tenant.NewDirectory(next)
		if err != nil {
			return err
		}
		now := s.now().UnixMicro()
		keep := map[string]bool{}
		for _, t := range dir.Tenants() {
			keep[t.Slug] = true
			doc, err := json.Marshal(t)
			if err != nil {
				return fmt.Errorf("tenant %q: %w", t.Slug, err)
			}
			owner := sql.NullString{String: t.OwnerUserID, Valid: t.OwnerUserID != ""}
			if _, err := q.ExecContext(ctx, `INSERT INTO tenants (slug, owner_user_id, doc, created_us, updated_us)
				VALUES (?, ?, ?, ?, ?)
				ON CONFLICT (slug) DO UPDATE SET owner_user_id = excluded.owner_user_id, doc = excluded.doc,
					updated_us = excluded.updated_us
				WHERE tenants.doc IS NOT excluded.doc OR tenants.owner_user_id IS NOT excluded.owner_user_id`,
				t.Slug, owner, string(doc), now, now); err != nil {
				return fmt.Errorf("tenant %q: %w", t.Slug, err)
			}
		}
		for _, t := range cur {
			if !keep[t.Slug] {
				if _, err := q.ExecContext(ctx, `DELETE FROM tenants WHERE slug = ?`, t.Slug); err != nil {
					return fmt.Errorf("removing tenant %q: %w", t.Slug, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: update tenants: %w", err)
	}
	return nil
}
