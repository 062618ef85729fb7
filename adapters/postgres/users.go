package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/402claw/dispatcher/ops"
)

var _ ops.Users = (*Store)(nil)

// table returns the schema-qualified, quoted name of one of the store's
// tables.
func (s *Store) table(name string) string { return pgx.Identifier{s.schema, name}.Sanitize() }

// pgCode returns the SQLSTATE of a PostgreSQL error, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// CreateUser implements ops.Users over the users table (0002).
func (s *Store) CreateUser(ctx context.Context, u ops.User) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO `+s.table("users")+` (id, name, created_at) VALUES ($1, $2, $3)`,
		u.ID, u.Name, u.CreatedAt.UTC())
	switch {
	case pgCode(err) == "23505":
		return fmt.Errorf("postgres: create user %q: %w", u.ID, ops.ErrDuplicate)
	case err != nil:
		return fmt.Errorf("postgres: create user %q: %w", u.ID, err)
	}
	return nil
}

// GetUser implements ops.Users.
func (s *Store) GetUser(ctx context.Context, id string) (ops.User, error) {
	var u ops.User
	err := s.pool.QueryRow(ctx, `SELECT id, name, created_at FROM `+s.table("users")+` WHERE id = $1`, id).Scan(&u.ID, &u.Name, &u.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return ops.User{}, fmt.Errorf("postgres: user %q: %w", id, ops.ErrNotFound)
	}
	if err != nil {
		return ops.User{}, fmt.Errorf("postgres: get user %q: %w", id, err)
	}
	u.CreatedAt = u.CreatedAt.UTC()
	return u, nil
}

// CreateKey implements ops.Users over the api_keys table (0002): only the
// key's hash is stored. A missing user is the foreign key's violation, a
// taken id or hash the unique index's.
func (s *Store) CreateKey(ctx context.Context, k ops.APIKey) error {
	var revoked *time.Time
	if !k.RevokedAt.IsZero() {
		r := k.RevokedAt.UTC()
		revoked = &r
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO `+s.table("api_keys")+` (id, user_id, key_hash, label, created_at, revoked_at)
		VALUES ($1, $2, $3, $4, $5, $6)`, k.ID, k.UserID, k.Hash, k.Label, k.CreatedAt.UTC(), revoked)
	switch code := pgCode(err); {
	case code == "23503":
		return fmt.Errorf("postgres: create key %q: user %q: %w", k.ID, k.UserID, ops.ErrNotFound)
	case code == "23505":
		return fmt.Errorf("postgres: create key %q: %w", k.ID, ops.ErrDuplicate)
	case err != nil:
		return fmt.Errorf("postgres: create key %q: %w", k.ID, err)
	}
	return nil
}

// KeyByHash implements ops.Users through the unique index on key_hash.
func (s *Store) KeyByHash(ctx context.Context, hash string) (ops.APIKey, error) {
	var k ops.APIKey
	var revoked *time.Time
	err := s.pool.QueryRow(ctx, `SELECT id, user_id, key_hash, label, created_at, revoked_at FROM `+s.table("api_keys")+
		` WHERE key_hash = $1`, hash).Scan(&k.ID, &k.UserID, &k.Hash, &k.Label, &k.CreatedAt, &revoked)
	if errors.Is(err, pgx.ErrNoRows) {
		return ops.APIKey{}, ops.ErrNotFound
	}
	if err != nil {
		return ops.APIKey{}, fmt.Errorf("postgres: key by hash: %w", err)
	}
	k.CreatedAt = k.CreatedAt.UTC()
	if revoked != nil {
		k.RevokedAt = revoked.UTC()
	}
	return k, nil
}

// RevokeKey implements ops.Users; a revoked key keeps its first revocation
// time.
func (s *Store) RevokeKey(ctx context.Context, id string, at time.Time) error {
	var found bool
	err := s.pool.QueryRow(ctx, `WITH u AS (UPDATE `+s.table("api_keys")+` SET revoked_at = coalesce(revoked_at, $2)
		WHERE id = $1 RETURNING 1) SELECT EXISTS (SELECT 1 FROM u)`, id, at.UTC()).Scan(&found)
	if err != nil {
		return fmt.Errorf("postgres: revoke key %q: %w", id, err)
	}
	if !found {
		return fmt.Errorf("postgres: key %q: %w", id, ops.ErrNotFound)
	}
	return nil
}
