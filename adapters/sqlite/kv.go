package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/402claw/dispatcher/kv"
)

var (
	_ kv.Store            = (*Store)(nil)
	_ kv.BatchIncrementer = (*Store)(nil)
)

func expiry(now int64, ttl time.Duration) sql.NullInt64 {
	if ttl <= 0 || int64(ttl) > math.MaxInt64-now {
		return sql.NullInt64{} // none, or past the end of the clock: never expires
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

const selectCounterSQL = `SELECT n, exp FROM kv WHERE key = ?`

// rowQuerier is what loadCounter reads with: a querier, or a prepared
// statement (as a func).
type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// stmtRow adapts a prepared statement of selectCounterSQL to rowQuerier.
type stmtRow struct{ st *sql.Stmt }

func (r stmtRow) QueryRowContext(ctx context.Context, _ string, args ...any) *sql.Row {
	return r.st.QueryRowContext(ctx, args...)
}

func loadCounter(ctx context.Context, q rowQuerier, key string, now int64) (counter, error) {
	var c counter
	var n sql.NullInt64
	err := q.QueryRowContext(ctx, selectCounterSQL, key).Scan(&n, &c.exp)
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
	n, ok := kv.Apply(c.n, in)
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
func storeCounter(ctx context.Context, q querier, key string, c counter) error {
	_, err := q.ExecContext(ctx, `INSERT INTO kv (key, v, n, exp) VALUES (?, NULL, ?, ?)
		ON CONFLICT (key) DO UPDATE SET v = NULL, n = excluded.n, exp = excluded.exp`, key, c.n, c.exp)
	return err
}

// incrSQL is Incr as one statement. The row to insert is the outcome over
// an absent key, computed in Go (?2); it is produced only when that outcome
// writes (?3) or when the key exists, possibly expired, in which case the
// conflict turns it into the update, whose arithmetic is kv.Increment's over
// the stored value (0 when expired): base = max(cur, Floor), admitted when
// Delta <= 0 or base <= Max - Delta (?7, so base + Delta cannot overflow),
// new value max(base + Delta, 0), written unless refused or a read that
// changes nothing. RETURNING yields the stored value only when the row was
// written.
//
//	?1 key  ?2 value if absent  ?3 absent outcome writes  ?4 now
//	?5 Floor  ?6 Delta  ?7 Max - Delta  ?8 expiry from TTL, or NULL
const incrSQL = `INSERT INTO kv (key, v, n, exp)
SELECT ?1, NULL, ?2, ?8 WHERE ?3 OR EXISTS (SELECT 1 FROM kv WHERE key = ?1)
ON CONFLICT (key) DO UPDATE SET
	v = NULL,
	n = max(max(CASE WHEN kv.exp <= ?4 THEN 0 ELSE coalesce(kv.n, 0) END, ?5) + ?6, 0),
	exp = CASE WHEN ?8 IS NOT NULL THEN ?8 WHEN kv.exp <= ?4 THEN NULL ELSE kv.exp END
WHERE (?6 <= 0 OR max(CASE WHEN kv.exp <= ?4 THEN 0 ELSE coalesce(kv.n, 0) END, ?5) <= ?7)
	AND NOT (?6 = 0 AND max(max(CASE WHEN kv.exp <= ?4 THEN 0 ELSE coalesce(kv.n, 0) END, ?5), 0)
		= CASE WHEN kv.exp <= ?4 THEN 0 ELSE coalesce(kv.n, 0) END)
RETURNING n`

// Incr implements kv.Store with one UPSERT (incrSQL), atomic by itself,
// whenever the increment writes: the common case costs one statement and
// no explicit transaction. An increment that writes nothing (refused, or a
// read) is answered from a plain read of the row, but only if that read
// shows a state in which the increment still writes nothing: the answer is
// then exactly what an atomic Incr at the moment of the read gives, and
// nothing was changed. Otherwise the state moved in between and the UPSERT
// is tried again; after a few rounds the transactional path decides.
func (s *Store) Incr(ctx context.Context, key string, in kv.Increment) (int64, bool, error) {
	readFirst := in.Delta == 0 // a read rarely writes: try the cheap path first
	for range 4 {
		if readFirst {
			now := s.now().UnixNano()
			c, err := s.readCounter(ctx, key, now)
			if err != nil {
				return 0, false, fmt.Errorf("sqlite: kv incr: %w", err)
			}
			if next, admitted, write := step(c, in, now); !write {
				return next.n, admitted, nil
			}
		}
		readFirst = true
		n, wrote, err := s.incrUpsert(ctx, key, in)
		if err != nil {
			return 0, false, fmt.Errorf("sqlite: kv incr: %w", err)
		}
		if wrote {
			s.afterKVWrite(ctx)
			return n, true, nil
		}
	}
	return s.incrTx(ctx, key, in)
}

// readCounter reads key's counter outside any transaction.
func (s *Store) readCounter(ctx context.Context, key string, now int64) (counter, error) {
	var c counter
	err := s.read(ctx, func() error {
		var err error
		c, err = loadCounter(ctx, stmtRow{s.counterStmt}, key, now)
		return err
	})
	return c, err
}

// incrUpsert runs incrSQL and reports the stored value when it wrote.
func (s *Store) incrUpsert(ctx context.Context, key string, in kv.Increment) (int64, bool, error) {
	if err := s.lockWrite(ctx); err != nil {
		return 0, false, err
	}
	defer s.unlockWrite()
	now := s.now().UnixNano()
	absent, _, absentWrites := step(counter{}, in, now)
	lim := int64(0)
	if in.Delta > 0 {
		lim = in.Max - in.Delta
		if in.Max < math.MinInt64+in.Delta {
			lim = math.MinInt64 // Max - Delta underflows: nothing is admitted
		}
	}
	var (
		n     int64
		wrote bool
	)
	err := s.retryBusy(ctx, func() error {
		err := s.incrStmt.QueryRowContext(ctx, key, absent.n, absentWrites, now, in.Floor, in.Delta, lim,
			expiry(now, in.TTL)).Scan(&n)
		wrote = err == nil
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		return err
	})
	return n, wrote, err
}

// incrTx is Incr as a read, a comparison and a write in one immediate
// transaction.
func (s *Store) incrTx(ctx context.Context, key string, in kv.Increment) (int64, bool, error) {
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
