package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/402claw/dispatcher/ops"
)

var _ ops.Users = (*Store)(nil)

// CreateUser implements ops.Users over the users table (migration 1).
func (s *Store) CreateUser(ctx context.Context, u ops.User) error {
	err := s.writeTx(ctx, func(q querier) error {
		var one int
		err := q.QueryRowContext(ctx, `SELECT 1 FROM users WHERE id = ?`, u.ID).Scan(&one)
		if err == nil {
			return ops.ErrDuplicate
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		_, err = q.ExecContext(ctx, `INSERT INTO users (id, name, created_us) VALUES (?, ?, ?)`,
			u.ID, u.Name, u.CreatedAt.UnixMicro())
		if isOpsConstraint(err) {
			return ops.ErrDuplicate
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: create user %q: %w", u.ID, err)
	}
	return nil
}

// GetUser implements ops.Users.
func (s *Store) GetUser(ctx context.Context, id string) (ops.User, error) {
	var u ops.User
	err := s.read(ctx, func() error {
		var us int64
		err := s.db.QueryRowContext(ctx, `SELECT id, name, created_us FROM users WHERE id = ?`, id).Scan(&u.ID, &u.Name, &us)
		u.CreatedAt = time.UnixMicro(us).UTC()
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return ops.User{}, fmt.Errorf("sqlite: user %q: %w", id, ops.ErrNotFound)
	}
	if err != nil {
		return ops.User{}, fmt.Errorf("sqlite: get user %q: %w", id, err)
	}
	return u, nil
}

// CreateKey implements ops.Users over the api_keys table (migration 1).
// Only the key's hash is stored.
func (s *Store) CreateKey(ctx context.Context, k ops.APIKey) error {
	err := s.writeTx(ctx, func(q querier) error {
		var one int
		err := q.QueryRowContext(ctx, `SELECT 1 FROM users WHERE id = ?`, k.UserID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return ops.ErrNotFound
		}
		if err != nil {
			return err
		}
		err = q.QueryRowContext(ctx, `SELECT 1 FROM api_keys WHERE id = ? OR key_hash = ?`, k.ID, k.Hash).Scan(&one)
		if err == nil {
			return ops.ErrDuplicate
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var revoked sql.NullInt64
		if !k.RevokedAt.IsZero() {
			revoked = sql.NullInt64{Int64: k.RevokedAt.UnixMicro(), Valid: true}
		}
		_, err = q.ExecContext(ctx, `INSERT INTO api_keys (id, user_id, key_hash, label, created_us, revoked_us)
			VALUES (?, ?, ?, ?, ?, ?)`, k.ID, k.UserID, k.Hash, k.Label, k.CreatedAt.UnixMicro(), revoked)
		if isOpsConstraint(err) {
			return ops.ErrDuplicate
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: create key %q: %w", k.ID, err)
	}
	return nil
}

// KeyByHash implements ops.Users through the unique index on key_hash.
func (s *Store) KeyByHash(ctx context.Context, hash string) (ops.APIKey, error) {
	var k ops.APIKey
	err := s.read(ctx, func() error {
		var created int64
		var revoked sql.NullInt64
		err := s.db.QueryRowContext(ctx, `SELECT id, user_id, key_hash, label, created_us, revoked_us
			FROM api_keys WHERE key_hash = ?`, hash).Scan(&k.ID, &k.UserID, &k.Hash, &k.Label, &created, &revoked)
		k.CreatedAt = time.UnixMicro(created).UTC()
		if revoked.Valid {
			k.RevokedAt = time.UnixMicro(revoked.Int64).UTC()
		}
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return ops.APIKey{}, ops.ErrNotFound
	}
	if err != nil {
		return ops.APIKey{}, fmt.Errorf("sqlite: key by hash: %w", err)
	}
	return k, nil
}

// RevokeKey implements ops.Users; a revoked key keeps its first revocation
// time.
func (s *Store) RevokeKey(ctx context.Context, id string, at time.Time) error {
	err := s.writeTx(ctx, func(q querier) error {
		var one int
		err := q.QueryRowContext(ctx, `SELECT 1 FROM api_keys WHERE id = ?`, id).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return ops.ErrNotFound
		}
		if err != nil {
			return err
		}
		_, err = q.ExecContext(ctx, `UPDATE api_keys SET revoked_us = ? WHERE id = ? AND revoked_us IS NULL`, at.UnixMicro(), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: revoke key %q: %w", id, err)
	}
	return nil
}

// isOpsConstraint reports a constraint violation (a unique key raced in by
// another process between the check and the insert).
func isOpsConstraint(err error) bool {
	return err != nil && strings.Contains(err.Error(), "constraint failed")
}
