package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/402claw/dispatcher/kv"
)

var (
	_ kv.Store            = (*Store)(nil)
	_ kv.BatchIncrementer = (*Store)(nil)
)

func expiry(now int64, ttl time.Duration) sql.NullInt64 {
	if ttl <= 0 {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: now + int64(ttl), Valid: true}
}

// Get implements kv.Store. A counter's value is its decimal text.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	now := s.now().UnixNano()
	var (
		v []byte
		n sql.NullInt64
	)
	err := s.read(ctx, func() error {
		return s.db.QueryRowContext(ctx,
			`SELECT v, n FROM kv WHERE key = ? AND (exp IS NULL OR exp > ?)`, key, now).Scan(&v, &n)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, kv.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: kv get: %w", err)
	}
	if n.Valid {
		return strconv.AppendInt(nil, n.Int64, 10), nil
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// Set implements kv.Store.
func (s *Store) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if value == nil {
		value = []byte{}
	}
	_, err := s.execWrite(ctx, `INSERT INTO kv (key, v, n, exp) VALUES (?, ?, NULL, ?)
		ON CONFLICT (key) DO UPDATE SET v = excluded.v, n = NULL, exp = excluded.exp`,
		key, value, expiry(s.now().UnixNano(), ttl))
	if err != nil {
		return fmt.Errorf("sqlite: kv set: %w", err)
	}
	s.afterKVWrite(ctx)
	return nil
}

// SetNX implements kv.Store: one UPSERT whose update only fires over an
// expired key, so exactly one of any number of racing callers wins.
func (s *Store) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if value == nil {
		value = []byte{}
	}
	now := s.now().UnixNano()
	rows, err := s.execWrite(ctx, `INSERT INTO kv (key, v, n, exp) VALUES (?, ?, NULL, ?)
		ON CONFLICT (key) DO UPDATE SET v = excluded.v, n = NULL, exp = excluded.exp
		WHERE kv.exp IS NOT NULL AND kv.exp <= ?`,
		key, value, expiry(now, ttl), now)
	if err != nil {
		return false, fmt.Errorf("sqlite: kv setnx: %w", err)
	}
	s.afterKVWrite(ctx)
	return rows == 1, nil
}

// Delete implements kv.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if _, err := s.execWrite(ctx, `DELETE FROM kv WHERE key = ?`, key); err != nil {
		return fmt.Errorf("sqlite: kv delete: %w", err)
	}
	return nil
}

// counter is a kv row as Incr sees it.
type counter struct {
	n      int64
	exp    sql.NullInt64
	exists bool // a live row (not expired)
}

func loadCounter(ctx context.Context, q querier, key string, now int64) (counter, error) {
	var c counter
	var n sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT n, exp FROM kv WHERE key = ?`, key).Scan(&n, &c.exp)
	if errors.Is(err, sql.ErrNoRows) {
		return counter{}, nil
	}
	if err != nil {
		return counter{}, err
	}
	if c.exp.Valid && c.exp.Int64 <= now {
		return counter{}, nil // expired: reads as absent
	}
	c.n, c.exists = n.Int64, true
	return c, nil
}

// step applies in to c in memory and reports whether it was admitted and
// whether the row must be written.
func step(c counter, in kv.Increment, now int64) (next counter, admitted, write bool) {
	n, ok := applyIncrement(c.n, in)
	if !ok {
		return c, false, false
	}
	if in.Delta == 0 && n == c.n {
		return c, true, false // a read leaves the key, and its absence, alone
	}
	next = counter{n: n, exp: c.exp, exists: true}
	if in.TTL > 0 {
		next.exp = expiry(now, in.TTL)
	}
	return next, true, true
}

// applyIncrement is kv.Increment's arithmetic: n = max(cur, Floor) + Delta,
// refused when Delta > 0 and n exceeds Max (or overflows), clamped at 0.
func applyIncrement(cur int64, in kv.Increment) (int64, bool) {
	base := max(cur, in.Floor)
	n := base + in.Delta
	if in.Delta > 0 && (n < base || n > in.Max) {
		return cur, false
	}
	return max(n, 0), true
}

func storeCounter(ctx context.Context, q querier, key string, c counter) error {
	_, err := q.ExecContext(ctx, `INSERT INTO kv (key, v, n, exp) VALUES (?, NULL, ?, ?)
		ON CONFLICT (key) DO UPDATE SET v = NULL, n = excluded.n, exp = excluded.exp`, key, c.n, c.exp)
	return err
}

// Incr implements kv.Store. The read, the comparison and the write happen in
// one immediate transaction, so the increment is atomic across connections
// and processes.
func (s *Store) Incr(ctx context.Context, key string, in kv.Increment) (int64, bool, error) {
	var (
		val   int64
		ok    bool
		wrote bool
	)
	err := s.writeTx(ctx, func(q querier) error {
		now := s.now().UnixNano()
		c, err := loadCounter(ctx, q, key, now)
		if err != nil {
			return err
		}
		next, admitted, write := step(c, in, now)
		val, ok, wrote = next.n, admitted, write
		if !write {
			return nil
		}
		return storeCounter(ctx, q, key, next)
	})
	if err != nil {
		return 0, false, fmt.Errorf("sqlite: kv incr: %w", err)
	}
	if wrote {
		s.afterKVWrite(ctx)
	}
	return val, ok, nil
}

// IncrAll implements kv.BatchIncrementer in one immediate transaction: all
// increments are checked first (in order, a key repeated in the batch sees
// its earlier increments) and written only if every one is admitted.
func (s *Store) IncrAll(ctx context.Context, keys []string, ins []kv.Increment) ([]int64, int, error) {
	if len(keys) != len(ins) {
		return nil, -1, errors.New("sqlite: kv IncrAll: keys and increments differ in length")
	}
	values := make([]int64, len(keys))
	refused := -1
	err := s.writeTx(ctx, func(q querier) error {
		refused = -1
		now := s.now().UnixNano()
		orig := make(map[string]counter, len(keys))
		state := make(map[string]counter, len(keys))
		dirty := make(map[string]bool, len(keys))
		for i, k := range keys {
			c, seen := state[k]
			if !seen {
				var err error
				if c, err = loadCounter(ctx, q, k, now); err != nil {
					return err
				}
				orig[k] = c
			}
			next, admitted, write := step(c, ins[i], now)
			if !admitted {
				refused = i
				// Nothing is written: report every key's current value.
				for j, k := range keys {
					c, read := orig[k]
					if !read {
						var err error
						if c, err = loadCounter(ctx, q, k, now); err != nil {
							return err
						}
						orig[k] = c
					}
					values[j] = c.n
				}
				return nil
			}
			state[k], values[i] = next, next.n
			if write {
				dirty[k] = true
			}
		}
		for _, k := range keys {
			if dirty[k] {
				if err := storeCounter(ctx, q, k, state[k]); err != nil {
					return err
				}
				delete(dirty, k)
			}
		}
		return nil
	})
	if err != nil {
		return nil, -1, fmt.Errorf("sqlite: kv IncrAll: %w", err)
	}
	if refused < 0 {
		s.afterKVWrite(ctx)
	}
	return values, refused, nil
}

// SweepExpired deletes expired kv rows and returns how many it deleted.
// The Store also sweeps by itself every few thousand kv writes.
func (s *Store) SweepExpired(ctx context.Context) (int64, error) {
	n, err := s.execWrite(ctx, `DELETE FROM kv WHERE exp IS NOT NULL AND exp <= ?`, s.now().UnixNano())
	if err != nil {
		return 0, fmt.Errorf("sqlite: kv sweep: %w", err)
	}
	return n, nil
}

func (s *Store) afterKVWrite(ctx context.Context) {
	if s.kvWrites.Add(1)%int64(s.sweepEvery) == 0 {
		_, _ = s.SweepExpired(ctx)
	}
}
