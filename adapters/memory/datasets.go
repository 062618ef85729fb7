package memory

import (
	"context"
	"fmt"
	"sync"

	"github.com/402claw/dispatcher/ops"
)

// Datasets is an in-memory ops.Datasets.
type Datasets struct {
	mu   sync.RWMutex
	sets map[string]ops.Dataset
}

var _ ops.Datasets = (*Datasets)(nil)

// NewDatasets returns an empty in-memory data set store.
func NewDatasets() *Datasets { return &Datasets{sets: map[string]ops.Dataset{}} }

// PutDataset implements ops.Datasets. It keeps a copy of d.Data.
func (s *Datasets) PutDataset(ctx context.Context, d ops.Dataset) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d.Data = append([]byte{}, d.Data...)
	d.UpdatedAt = usTime(d.UpdatedAt)
	s.mu.Lock()
	s.sets[d.Name] = d
	s.mu.Unlock()
	return nil
}

// GetDataset implements ops.Datasets. The data returned is the caller's.
func (s *Datasets) GetDataset(ctx context.Context, name string) (ops.Dataset, error) {
	if err := ctx.Err(); err != nil {
		return ops.Dataset{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	d, ok := s.sets[name]
	if !ok {
		return ops.Dataset{}, fmt.Errorf("%w: data set %q", ops.ErrNotFound, name)
	}
	d.Data = append([]byte{}, d.Data...)
	return d, nil
}

// StatDataset implements ops.Datasets.
func (s *Datasets) StatDataset(ctx context.Context, name string) (ops.Dataset, error) {
	if err := ctx.Err(); err != nil {
		return ops.Dataset{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	d, ok := s.sets[name]
	if !ok {
		return ops.Dataset{}, fmt.Errorf("%w: data set %q", ops.ErrNotFound, name)
	}
	d.Data = nil
	return d, nil
}

// DeleteDataset implements ops.Datasets.
func (s *Datasets) DeleteDataset(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sets[name]; !ok {
		return fmt.Errorf("%w: data set %q", ops.ErrNotFound, name)
	}
	delete(s.sets, name)
	return nil
}
