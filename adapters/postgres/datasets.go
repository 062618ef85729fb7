package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/402claw/dispatcher/ops"
)

var _ ops.Datasets = (*Store)(nil)

// PutDataset implements ops.Datasets over the datasets table (0004): one
// upsert, the data as bytea byte for byte.
func (s *Store) PutDataset(ctx context.Context, d ops.Dataset) error {
	data := d.Data
	if data == nil {
		data = []byte{}
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO `+s.table("datasets")+` (name, owner_user_id, content_type, sha256, size, data, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
		ON CONFLICT (name) DO UPDATE SET owner_user_id = excluded.owner_user_id, content_type = excluded.content_type,
			sha256 = excluded.sha256, size = excluded.size, data = excluded.data, updated_at = excluded.updated_at`,
		d.Name, d.OwnerUserID, d.ContentType, d.SHA256, d.Size, data, d.UpdatedAt.UTC())
	if err != nil {
		return fmt.Errorf("postgres: put data set %q: %w", d.Name, err)
	}
	return nil
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
	data := "NULL::bytea"
	if withData {
		data = "data"
	}
	var d ops.Dataset
	var raw []byte
	err := s.pool.QueryRow(ctx, `SELECT name, owner_user_id, content_type, sha256, size, `+data+`, updated_at FROM `+
		s.table("datasets")+` WHERE name = $1`, name).Scan(&d.Name, &d.OwnerUserID, &d.ContentType, &d.SHA256, &d.Size, &raw, &d.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return ops.Dataset{}, fmt.Errorf("postgres: data set %q: %w", name, ops.ErrNotFound)
	}
	if err != nil {
		return ops.Dataset{}, fmt.Errorf("postgres: get data set %q: %w", name, err)
	}
	d.UpdatedAt = d.UpdatedAt.UTC()
	if withData {
		d.Data = append([]byte{}, raw...)
	}
	return d, nil
}

// DeleteDataset implements ops.Datasets.
func (s *Store) DeleteDataset(ctx context.Context, name string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM `+s.table("datasets")+` WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("postgres: delete data set %q: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: data set %q: %w", name, ops.ErrNotFound)
	}
	return nil
}
