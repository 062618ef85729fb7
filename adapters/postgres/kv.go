package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/402claw/dispatcher/kv"
)

var (
	_ kv.Store            = (*Store)(nil)
	_ kv.BatchIncrementer = (*Store)(nil)
)

type queries struct {
	get, set, setNX, del, incr, values, purge string
}

// buildQueries writes the KV statements for one schema. The parameters of
// incr are $1 key, $2 delta, $3 floor, $4 max, $5 TTL in microseconds.
func buildQueries(schema string) queries {
	tbl := pgx.Identifier{schema, "kv"}.Sanitize()
	const live = `(t.expires_at IS NULL OR t.expires_at > now())`
	const expiry = `CASE WHEN $5::bigint > 0 THEN now() + $5::bigint * interval '1 microsecond' END`
	// cur is the counter in the conflicting row: 0 when expired or when the
	// row holds a value rather than a counter (as in the memory adapter).
	const cur = `(CASE WHEN t.value IS NULL AND ` + live + ` THEN t.n ELSE 0 END)`
	// admit and write are kv.Increment's rule on a current value c, in
	// numeric so that nothing overflows: refused when Delta > 0 and the
	// result passes Max; a Delta of 0 with Floor <= c is a read that writes
	// nothing.
	admit := func(c string) string {
		return `NOT ($2::bigint > 0 AND greatest(` + c + `, $3::bigint)::numeric + $2::bigint > $4::bigint)` +
			` AND NOT ($2::bigint = 0 AND $3::bigint <= ` + c + `)`
	}
	// next is clamped into bigint's range before the cast even though an
	// admitted result always fits: the planner may fold the expression with
	// the parameters' values before the WHERE has refused the row.
	next := func(c string) string {
		return `least(greatest(greatest(` + c + `, $3::bigint)::numeric + $2::bigint, 0), 9223372036854775807)::bigint`
	}
	r := strings.NewReplacer("{tbl}", tbl, "{live}", live, "{expiry}", expiry, "{cur}", cur)
	return queries{
		get: r.Replace(`SELECT t.n, t.value IS NULL, t.value FROM {tbl} t WHERE t.key = $1 AND {live}`),
		set: r.Replace(`INSERT INTO {tbl} AS t (key, n, value, expires_at)
			VALUES ($1, 0, $2, CASE WHEN $3::bigint > 0 THEN now() + $3::bigint * interval '1 microsecond' END)
			ON CONFLICT (key) DO UPDATE SET n = 0, value = excluded.value, expires_at = excluded.expires_at`),
		setNX: r.Replace(`INSERT INTO {tbl} AS t (key, n, value, expires_at)
			VALUES ($1, 0, $2, CASE WHEN $3::bigint > 0 THEN now() + $3::bigint * interval '1 microsecond' END)
			ON CONFLICT (key) DO UPDATE SET n = 0, value = excluded.value, expires_at = excluded.expires_at
			WHERE NOT {live}
			RETURNING true`),
		del: r.Replace(`DELETE FROM {tbl} WHERE key = $1`),
		// One statement: the INSERT proposes a row only when the increment
		// would apply to an absent key (a necessary condition for any
		// current value, since counters are never negative); on conflict the
		// DO UPDATE locks the row and decides on its latest version. When
		// nothing was written the second branch reports the counter as of
		// the statement's start.
		incr: r.Replace(`WITH up AS (
				INSERT INTO {tbl} AS t (key, n, value, expires_at)
				SELECT $1::text, ` + next("0") + `, NULL, {expiry}
				WHERE ` + admit("0") + `
				ON CONFLICT (key) DO UPDATE SET
					n = ` + next("{cur}") + `,
					value = NULL,
					expires_at = CASE WHEN $5::bigint > 0 THEN now() + $5::bigint * interval '1 microsecond'
						WHEN {live} THEN t.expires_at END
				WHERE ` + admit("{cur}") + `
				RETURNING t.n
			)
			SELECT true, n FROM up
			UNION ALL
			SELECT false, coalesce((SELECT {cur} FROM {tbl} t WHERE t.key = $1), 0)
			WHERE NOT EXISTS (SELECT 1 FROM up)`),
		values: r.Replace(`SELECT t.key, {cur} FROM {tbl} t WHERE t.key = ANY($1)`),
		purge: r.Replace(`DELETE FROM {tbl} WHERE key IN (
				SELECT t.key FROM {tbl} t WHERE t.expires_at <= now()
				LIMIT 10000 FOR UPDATE SKIP LOCKED)`),
	}
}

func wrap(op, key string, err error) error {
	return fmt.Errorf("postgres kv: %s %q: %w", op, key, err)
}

// ttlMicros converts a TTL to whole microseconds, rounding up so that a tiny
// positive TTL still expires rather than meaning "no expiry".
func ttlMicros(ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	us := ttl / time.Microsecond
	if ttl%time.Microsecond != 0 {
		us++
	}
	return int64(us)
}

// Get implements kv.Store. A counter reads as its decimal text.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	var (
		n       int64
		counter bool
		value   []byte
	)
	err := s.pool.QueryRow(ctx, s.q.get, key).Scan(&n, &counter, &value)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, kv.ErrNotFound
	}
	if err != nil {
		return nil, wrap("get", key, err)
	}
	if counter {
		return strconv.AppendInt(nil, n, 10), nil
	}
	if value == nil {
		value = []byte{}
	}
	return value, nil
}

// Set implements kv.Store.
func (s *Store) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if value == nil {
		value = []byte{} // NULL marks a counter
	}
	if _, err := s.pool.Exec(ctx, s.q.set, key, value, ttlMicros(ttl)); err != nil {
		return wrap("set", key, err)
	}
	return nil
}

// SetNX implements kv.Store.
func (s *Store) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if value == nil {
		value = []byte{}
	}
	var ok bool
	err := s.pool.QueryRow(ctx, s.q.setNX, key, value, ttlMicros(ttl)).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, wrap("setnx", key, err)
	}
	return ok, nil
}

// Delete implements kv.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if _, err := s.pool.Exec(ctx, s.q.del, key); err != nil {
		return wrap("delete", key, err)
	}
	return nil
}

// Incr implements kv.Store in one statement.
func (s *Store) Incr(ctx context.Context, key string, in kv.Increment) (int64, bool, error) {
	var (
		written bool
		n       int64
	)
	err := s.pool.QueryRow(ctx, s.q.incr, key, in.Delta, in.Floor, in.Max, ttlMicros(in.TTL)).Scan(&written, &n)
	if err != nil {
		return 0, false, wrap("incr", key, err)
	}
	n, ok := outcome(written, n, in)
	return n, ok, nil
}

// outcome interprets the incr statement's answer. Nothing written means
// either a refusal (Delta > 0) or a pure read (Delta 0, Floor <= cur), whose
// result is max(cur, Floor) = cur.
func outcome(written bool, n int64, in kv.Increment) (int64, bool) {
	if written {
		return n, true
	}
	if in.Delta > 0 {
		return n, false
	}
	if in.Floor > n {
		n = in.Floor // the counter moved between snapshot and lock; still a read
	}
	return max(n, 0), true
}

// IncrAll implements kv.BatchIncrementer, all or none, in one transaction.
// The statements run in sorted key order (stable, so a key listed twice sees
// its earlier increment) to make lock order global; refused reports the
// lowest index among the refused increments.
func (s *Store) IncrAll(ctx context.Context, keys []string, ins []kv.Increment) ([]int64, int, error) {
	if len(keys) != len(ins) {
		return nil, -1, errors.New("postgres kv: IncrAll: keys and increments differ in length")
	}
	if len(keys) == 0 {
		return []int64{}, -1, nil
	}
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return strings.Compare(keys[a], keys[b]) })

	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, -1, wrap("incrall", keys[0], err)
	}
	// A connection left inside a transaction (after an error) is destroyed
	// by Release rather than reused.
	defer conn.Release()

	b := &pgx.Batch{}
	b.Queue("BEGIN ISOLATION LEVEL READ COMMITTED")
	for _, i := range order {
		in := ins[i]
		b.Queue(s.q.incr, keys[i], in.Delta, in.Floor, in.Max, ttlMicros(in.TTL))
	}
	values := make([]int64, len(keys))
	refused := -1
	err = func() error {
		br := conn.SendBatch(ctx, b)
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return err
		}
		for _, i := range order {
			var written bool
			var n int64
			if err := br.QueryRow().Scan(&written, &n); err != nil {
				return err
			}
			var ok bool
			values[i], ok = outcome(written, n, ins[i])
			if !ok && (refused < 0 || i < refused) {
				refused = i
			}
		}
		return br.Close()
	}()
	if err != nil {
		return nil, -1, wrap("incrall", keys[0], err)
	}
	if refused < 0 {
		if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
			return nil, -1, wrap("incrall commit", keys[0], err)
		}
		return values, -1, nil
	}
	// Refused: undo, and report the values as they stand.
	b = &pgx.Batch{}
	b.Queue("ROLLBACK")
	b.Queue(s.q.values, keys)
	cur := make(map[string]int64, len(keys))
	err = func() error {
		br := conn.SendBatch(ctx, b)
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return err
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		for rows.Next() {
			var k string
			var n int64
			if err := rows.Scan(&k, &n); err != nil {
				return err
			}
			cur[k] = n
		}
		if err := rows.Err(); err != nil {
			return err
		}
		return br.Close()
	}()
	if err != nil {
		return nil, -1, wrap("incrall rollback", keys[0], err)
	}
	for i, k := range keys {
		values[i] = cur[k]
	}
	return values, refused, nil
}

// PurgeExpired deletes expired rows and returns how many it deleted. Expired
// rows are already invisible to every read; purging only reclaims space, so
// call it from a maintenance job (every few minutes is plenty). It deletes in
// chunks and skips rows that a concurrent write holds.
func (s *Store) PurgeExpired(ctx context.Context) (int64, error) {
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, s.q.purge)
		if err != nil {
			return total, fmt.Errorf("postgres kv: purge expired: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 10000 {
			return total, nil
		}
	}
}
