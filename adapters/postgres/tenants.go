package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/402claw/dispatcher/tenant"
)

var _ tenant.Store = (*Store)(nil)

type tenantQueries struct {
	lock              int64
	load, del, insert string
}

func buildTenantQueries(schema string) tenantQueries {
	r := strings.NewReplacer("{tenants}", pgx.Identifier{schema, "tenants"}.Sanitize())
	return tenantQueries{
		lock: lockKey("tenants:" + schema),
		load: r.Replace(`SELECT doc FROM {tenants} ORDER BY position`),
		del:  r.Replace(`DELETE FROM {tenants}`),
		insert: r.Replace(`INSERT INTO {tenants} (slug, position, owner_user_id, doc)
			SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[])`),
	}
}

// LoadTenants implements tenant.Store. The stored documents are parsed as one
// directory ({"tenants":[...]}) by tenant.ParseDirectory, in their saved
// order, so what comes back is validated exactly like a directory file. The
// documents hold every field of tenant.Tenant, routes, schemes and cookies
// included, so new tenant fields need no migration (tenanttest's round trip
// checks it). The result is sorted by slug, as tenant.Store documents.
func (s *Store) LoadTenants(ctx context.Context) ([]tenant.Tenant, error) {
	rows, err := s.pool.Query(ctx, s.tq.load)
	if err != nil {
		return nil, fmt.Errorf("postgres: load tenants: %w", err)
	}
	docs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("postgres: load tenants: %w", err)
	}
	if len(docs) == 0 {
		return []tenant.Tenant{}, nil
	}
	var buf bytes.Buffer
	buf.WriteString(`{"tenants":[`)
	for i, d := range docs {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString(d)
	}
	buf.WriteString(`]}`)
	dir, err := tenant.ParseDirectory(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("postgres: load tenants: the stored directory does not parse: %w", err)
	}
	return dir.Tenants(), nil
}

// SaveTenants implements tenant.Store: in one transaction, under an advisory
// lock that serialises concurrent saves from any replica, every stored
// tenant is deleted and the new ones inserted, so readers see the old
// directory or the new one, never a mix. A directory that tenant.NewDirectory
// refuses is not saved (the error wraps tenant.ErrInvalidDirectory).
func (s *Store) SaveTenants(ctx context.Context, tenants []tenant.Tenant) error {
	if _, err := tenant.NewDirectory(tenants); err != nil {
		return fmt.Errorf("postgres: save tenants: %w", err)
	}
	n := len(tenants)
	slugs, owners, docs := make([]string, n), make([]string, n), make([]string, n)
	positions := make([]int32, n)
	for i := range tenants {
		doc, err := json.Marshal(&tenants[i])
		if err != nil {
			return fmt.Errorf("postgres: save tenants: %s: %w", tenants[i].Slug, err)
		}
		slugs[i], owners[i], docs[i], positions[i] = tenants[i].Slug, tenants[i].OwnerUserID, string(doc), int32(i)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue("SELECT pg_advisory_xact_lock($1)", s.tq.lock)
		b.Queue(s.tq.del)
		if n > 0 {
			b.Queue(s.tq.insert, slugs, positions, owners, docs)
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("postgres: save tenants: %w", err)
	}
	return nil
}
