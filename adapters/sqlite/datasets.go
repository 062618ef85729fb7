package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/402claw/dispatcher/ops"
)

var _ ops.Datasets = (*Store)(nil)

// PutDataset implements ops.Datasets over the datasets table (migration
// 3): one upsert, the data as a BLOB byte for byte.
func (s *Store) PutDataset(ctx context.Context, d ops.Dataset) error {
	err := s.writeTx(ctx, func(q querier) error {
		us := d.UpdatedAt.UnixMicro()
		_, err := q.ExecContext(ctx, `INSERT INTO datasets (name, owner_user_id, content_type, sha256, size, data, created_us, updated_us)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET owner_user_id = excluded.owner_user_id, content_type = excluded.content_type,
				sha256 = excluded.sha256, size = excluded.size, data = excluded.data, updated_us = excluded.updated_us`,
			d.Name, d.OwnerUserID, d.ContentType, d.SHA256, d.Size, nonNil(d.Data), us, us)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: put data set %q: %w", d.Name, err)
	}
	return nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// GetDataset implements ops.Datasets.
func (s *Store) GetDataset(ctx context.Context, name string) (ops.Dataset, error) {
	return s.dataset(ctx, name, true)
}

// StatDataset implements ops.Datasets without reading the data.
func (s *Store) StatDataset(ctx context.Context, name string) (ops.Dataset, error) {
	return s.dataset(ctx, name, false)
}

func (s *Store) dataset(ctx context.Context, name string, withData bool) (ops.Dataset, error) {
	data := "NULL"
	if withData {
		data = "data"
	}
	var d ops.Dataset
	err := s.read(ctx, func() error {
		var us int64
		var raw []byte
		err := s.db.QueryRowContext(ctx, `SELECT name, owner_user_id, content_type, sha256, size, `+data+`, updated_us
			FROM datasets WHERE name = ?`, name).Scan(&d.Name, &d.OwnerUserID, &d.ContentType, &d.SHA256, &d.Size, &raw, &us)
		d.UpdatedAt = time.UnixMicro(us).UTC()
		if withData {
			d.Data = append([]byte{}, raw...)
		}
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return ops.Dataset{}, fmt.Errorf("sqlite: data set %q: %w", name, ops.ErrNotFound)
	}
	if err != nil {
		return ops.Dataset{}, fmt.Errorf("sqlite: get data set %q: %w", name, err)
	}
	return d, nil
}

// DeleteDataset implements ops.Datasets.
func (s *Store) DeleteDataset(ctx context.Context, name string) error {
	var n int64
	err := s.writeTx(ctx, func(q querier) error {
		res, err := q.ExecContext(ctx, `DELETE FROM datasets WHERE name = ?`, name)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: delete data set %q: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite: data set %q: %w", name, ops.ErrNotFound)
	}
	return nil
}
