package memory

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/402claw/dispatcher/ops"
)

// Users is an in-memory ops.Users: users and API keys (by hash) behind one
// mutex.
type Users struct {
	mu     sync.RWMutex
	users  map[string]ops.User
	keys   map[string]ops.APIKey // by id
	byHash map[string]string     // hash -> key id
}

var _ ops.Users = (*Users)(nil)

// NewUsers returns an empty in-memory users store.
func NewUsers() *Users {
	return &Users{users: map[string]ops.User{}, keys: map[string]ops.APIKey{}, byHash: map[string]string{}}
}

func usTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// CreateUser implements ops.Users.
func (s *Users) CreateUser(ctx context.Context, u ops.User) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.users[u.ID]; dup {
		return fmt.Errorf("%w: user %q", ops.ErrDuplicate, u.ID)
	}
	u.CreatedAt = usTime(u.CreatedAt)
	s.users[u.ID] = u
	return nil
}

// GetUser implements ops.Users.
func (s *Users) GetUser(ctx context.Context, id string) (ops.User, error) {
	if err := ctx.Err(); err != nil {
		return ops.User{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	u, ok := s.users[id]
	if !ok {
		return ops.User{}, fmt.Errorf("%w: user %q", ops.ErrNotFound, id)
	}
	return u, nil
}

// CreateKey implements ops.Users.
func (s *Users) CreateKey(ctx context.Context, k ops.APIKey) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[k.UserID]; !ok {
		return fmt.Errorf("%w: user %q", ops.ErrNotFound, k.UserID)
	}
	if _, dup := s.keys[k.ID]; dup {
		return fmt.Errorf("%w: key %q", ops.ErrDuplicate, k.ID)
	}
	if _, dup := s.byHash[k.Hash]; dup {
		return fmt.Errorf("%w: key hash", ops.ErrDuplicate)
	}
	k.CreatedAt = usTime(k.CreatedAt)
	if !k.RevokedAt.IsZero() {
		k.RevokedAt = usTime(k.RevokedAt)
	}
	s.keys[k.ID] = k
	s.byHash[k.Hash] = k.ID
	return nil
}

// KeyByHash implements ops.Users.
func (s *Users) KeyByHash(ctx context.Context, hash string) (ops.APIKey, error) {
	if err := ctx.Err(); err != nil {
		return ops.APIKey{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	id, ok := s.byHash[hash]
	if !ok {
		return ops.APIKey{}, ops.ErrNotFound
	}
	return s.keys[id], nil
}

// RevokeKey implements ops.Users.
func (s *Users) RevokeKey(ctx context.Context, id string, at time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[id]
	if !ok {
		return fmt.Errorf("%w: key %q", ops.ErrNotFound, id)
	}
	if k.RevokedAt.IsZero() {
		k.RevokedAt = usTime(at)
		s.keys[id] = k
	}
	return nil
}
