package sqlite

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// ErrSchemaTooNew is returned by New when the database was migrated by a
// newer version of the dispatcher than this one: running old code on it
// could corrupt data, so the Store refuses it.
var ErrSchemaTooNew = errors.New("sqlite: database schema is newer than this code")

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in version order, checking
// that they are numbered 1..n without gaps.
func migrations() ([]migration, error) {
	files, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, f := range files {
		base := path.Base(f)
		num, name, ok := strings.Cut(strings.TrimSuffix(base, ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("sqlite: migration file %q is not named NNNN_name.sql", base)
		}
		body, err := migrationFS.ReadFile(f)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: name, sql: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("sqlite: migrations are not numbered 1..n: found %d at position %d", m.version, i+1)
		}
	}
	return ms, nil
}

// LatestSchemaVersion is the schema version this code migrates to.
func LatestSchemaVersion() int {
	ms, err := migrations()
	if err != nil {
		return 0
	}
	return len(ms)
}

// migrate applies the missing migrations in one write transaction, so
// concurrent New calls from several processes apply each exactly once.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	return s.writeTx(ctx, func(q querier) error {
		if _, err := q.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER PRIMARY KEY,
			name       TEXT    NOT NULL,
			applied_us INTEGER NOT NULL
		) STRICT`); err != nil {
			return fmt.Errorf("sqlite: create schema_migrations: %w", err)
		}
		var current int
		if err := q.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
			return fmt.Errorf("sqlite: read schema version: %w", err)
		}
		if current > len(ms) {
			return fmt.Errorf("%w: the database is at version %d, this code knows versions up to %d; upgrade the dispatcher", ErrSchemaTooNew, current, len(ms))
		}
		for _, m := range ms[current:] {
			if _, err := q.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("sqlite: migration %d (%s): %w", m.version, m.name, err)
			}
			if _, err := q.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_us) VALUES (?, ?, ?)`,
				m.version, m.name, s.now().UnixMicro()); err != nil {
				return fmt.Errorf("sqlite: record migration %d: %w", m.version, err)
			}
		}
		return nil
	})
}

// SchemaVersion returns the database's current schema version.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.read(ctx, func() error {
		return s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: schema version: %w", err)
	}
	return v, nil
}

// read runs a read-only fn, retrying while the database is locked.
func (s *Store) read(ctx context.Context, fn func() error) error {
	return s.retryBusy(ctx, fn)
}
