package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrSchemaTooNew is returned (wrapped) by New when the schema has migrations
// applied that this build does not know: a newer dispatcher has migrated it.
var ErrSchemaTooNew = errors.New("postgres: database schema is newer than this build")

// Config configures a Store.
type Config struct {
	// Schema holds every table of the store; it is created when missing.
	// Empty means "public".
	Schema string
}

// Store implements the dispatcher's storage ports on PostgreSQL. It is safe
// for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	schema string
	q      queries
	lq     ledgerQueries
	mq     metricsQueries
	tq     tenantQueries
	chain  chainWriter
}

//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// New applies pending migrations to cfg.Schema and returns a Store over pool.
// The pool stays the caller's: closing it is the caller's business.
func New(ctx context.Context, pool *pgxpool.Pool, cfg Config) (*Store, error) {
	if pool == nil {
		return nil, errors.New("postgres: New: nil pool")
	}
	schema := cfg.Schema
	if schema == "" {
		schema = "public"
	}
	if len(schema) > 63 || strings.ContainsRune(schema, 0) {
		return nil, fmt.Errorf("postgres: invalid schema name %q", schema)
	}
	migs, err := loadMigrations(migrationFiles)
	if err != nil {
		return nil, err
	}
	s := &Store{pool: pool, schema: schema, q: buildQueries(schema),
		lq: buildLedgerQueries(schema), mq: buildMetricsQueries(schema), tq: buildTenantQueries(schema)}
	if err := s.migrate(ctx, migs); err != nil {
		return nil, err
	}
	return s, nil
}

// SchemaVersion returns the highest migration version this build knows.
func SchemaVersion() int {
	migs, err := loadMigrations(migrationFiles)
	if err != nil || len(migs) == 0 {
		return 0
	}
	return migs[len(migs)-1].version
}

// loadMigrations reads NNNN_name.sql files, numbered 1, 2, 3... without gaps.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var migs []migration
	for _, name := range names {
		base := path.Base(name)
		num, rest, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("postgres: migration file %q is not named NNNN_name.sql", base)
		}
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		migs = append(migs, migration{version: v, name: strings.TrimSuffix(rest, ".sql"), sql: string(body)})
	}
	sort.Slice(migs, func(i, j int) bool { return migs[i].version < migs[j].version })
	for i, m := range migs {
		if m.version != i+1 {
			return nil, fmt.Errorf("postgres: migrations are not numbered 1..n without gaps (found %d at position %d)", m.version, i+1)
		}
	}
	return migs, nil
}

// migrate applies the missing migrations in one transaction. The advisory
// lock (per schema) makes replicas that start together take turns: the first
// migrates, the others then find nothing to do.
func (s *Store) migrate(ctx context.Context, migs []migration) (err error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrate %s: begin: %w", s.schema, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	wrap := func(step string, err error) error {
		return fmt.Errorf("postgres: migrate %s: %s: %w", s.schema, step, err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey("migrate:"+s.schema)); err != nil {
		return wrap("lock", err)
	}
	ident := pgx.Identifier{s.schema}.Sanitize()
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", s.schema).Scan(&exists); err != nil {
		return wrap("look up schema", err)
	}
	if !exists {
		if _, err := tx.Exec(ctx, "CREATE SCHEMA "+ident); err != nil {
			return wrap("create schema", err)
		}
	}
	if _, err := tx.Exec(ctx, "SET LOCAL search_path TO "+ident); err != nil {
		return wrap("set search_path", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`); err != nil {
		return wrap("create schema_migrations", err)
	}
	var current int
	if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&current); err != nil {
		return wrap("read version", err)
	}
	latest := 0
	if len(migs) > 0 {
		latest = migs[len(migs)-1].version
	}
	if current > latest {
		return fmt.Errorf("postgres: schema %q is at migration %d, but this build knows migrations up to %d only; run a newer build or use another schema: %w",
			s.schema, current, latest, ErrSchemaTooNew)
	}
	for _, m := range migs[current:] {
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return wrap(fmt.Sprintf("apply %04d_%s", m.version, m.name), err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
			return wrap(fmt.Sprintf("record %04d_%s", m.version, m.name), err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return wrap("commit", err)
	}
	return nil
}

// lockKey maps a name to a 64-bit advisory lock key, namespaced so that it
// is unlikely to collide with the application's own advisory locks.
func lockKey(name string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("github.com/402claw/dispatcher/adapters/postgres:" + name))
	return int64(h.Sum64())
}
