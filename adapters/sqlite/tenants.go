package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/402claw/dispatcher/tenant"
)

var _ tenant.Store = (*Store)(nil)

// LoadTenants implements tenant.Store: every stored tenant, by slug. Each
// row's doc is the tenant's JSON as SaveTenants wrote it, decoded field for
// field (no re-normalisation), so what was saved is what comes back. The doc
// holds every field of tenant.Tenant, routes, schemes and cookies included,
// so new tenant fields need no migration (tenanttest's round trip checks it).
func (s *Store) LoadTenants(ctx context.Context) ([]tenant.Tenant, error) {
	var out []tenant.Tenant
	err := s.read(ctx, func() error {
		out = out[:0]
		rows, err := s.db.QueryContext(ctx, `SELECT slug, doc FROM tenants ORDER BY slug`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var slug, doc string
			if err := rows.Scan(&slug, &doc); err != nil {
				return err
			}
			t, err := decodeTenant(doc)
			if err != nil {
				return fmt.Errorf("tenant %q: %w", slug, err)
			}
			if t.Slug != slug {
				return fmt.Errorf("tenant %q: its doc names slug %q", slug, t.Slug)
			}
			out = append(out, t)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: load tenants: %w", err)
	}
	return out, nil
}

// decodeTenant reads one doc: exactly one JSON object, nothing after it.
func decodeTenant(doc string) (tenant.Tenant, error) {
	var t tenant.Tenant
	dec := json.NewDecoder(bytes.NewReader([]byte(doc)))
	if err := dec.Decode(&t); err != nil {
		return tenant.Tenant{}, fmt.Errorf("bad doc: %w", err)
	}
	if dec.More() {
		return tenant.Tenant{}, fmt.Errorf("bad doc: trailing data")
	}
	return t, nil
}

// SaveTenants implements tenant.Store: in one immediate transaction the
// stored tenants become exactly tenants. The set is validated first, as
// tenant.NewDirectory validates it (unique slugs and hosts, a worker name,
// prices), so a directory that could not be loaded back is never stored;
// an invalid set returns an error wrapping tenant.ErrInvalidDirectory and
// changes nothing. Tenants are stored as NewDirectory keeps them (hosts
// normalised). A tenant whose doc is unchanged keeps its updated_us; every
// kept tenant keeps its created_us. Removing a tenant that api_keys rows
// still reference fails (foreign_keys(1)) and changes nothing.
func (s *Store) SaveTenants(ctx context.Context, tenants []tenant.Tenant) error {
	dir, err := tenant.NewDirectory(tenants)
	if err != nil {
		return fmt.Errorf("sqlite: save tenants: %w", err)
	}
	ts := dir.Tenants()
	docs := make([][]byte, len(ts))
	for i := range ts {
		if docs[i], err = json.Marshal(ts[i]); err != nil {
			return fmt.Errorf("sqlite: save tenants: tenant %q: %w", ts[i].Slug, err)
		}
	}
	now := s.now().UnixMicro()
	err = s.writeTx(ctx, func(q querier) error {
		keep := make(map[string]bool, len(ts))
		up, err := q.PrepareContext(ctx, `INSERT INTO tenants (slug, owner_user_id, doc, created_us, updated_us)
			VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (slug) DO UPDATE SET owner_user_id = excluded.owner_user_id, doc = excluded.doc,
				updated_us = excluded.updated_us
			WHERE tenants.doc IS NOT excluded.doc OR tenants.owner_user_id IS NOT excluded.owner_user_id`)
		if err != nil {
			return err
		}
		defer up.Close()
		for i, t := range ts {
			keep[t.Slug] = true
			owner := sql.NullString{String: t.OwnerUserID, Valid: t.OwnerUserID != ""}
			if _, err := up.ExecContext(ctx, t.Slug, owner, string(docs[i]), now, now); err != nil {
				return fmt.Errorf("tenant %q: %w", t.Slug, err)
			}
		}
		rows, err := q.QueryContext(ctx, `SELECT slug FROM tenants`)
		if err != nil {
			return err
		}
		var gone []string
		for rows.Next() {
			var slug string
			if err := rows.Scan(&slug); err != nil {
				rows.Close()
				return err
			}
			if !keep[slug] {
				gone = append(gone, slug)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, slug := range gone {
			if _, err := q.ExecContext(ctx, `DELETE FROM tenants WHERE slug = ?`, slug); err != nil {
				return fmt.Errorf("removing tenant %q: %w", slug, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: save tenants: %w", err)
	}
	return nil
}
