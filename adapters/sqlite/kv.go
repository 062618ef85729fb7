package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
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

// Get implements kv.Store. A counter's value is its decimal text; a live
// volatile counter is answered from memory.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	now := s.now().UnixNano()
	if c, ok := s.volatile.get(key, now); ok {
		return strconv.AppendInt(nil, c.n, 10), nil
	}
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

const (
	setSQL = `INSERT INTO kv (key, v, n, exp) VALUES (?, ?, NULL, ?)
		ON CONFLICT (key) DO UPDATE SET v = excluded.v, n = NULL, exp = excluded.exp`
	setNXSQL = `INSERT INTO kv (key, v, n, exp) VALUES (?, ?, NULL, ?)
		ON CONFLICT (key) DO UPDATE SET v = excluded.v, n = NULL, exp = excluded.exp
		WHERE kv.exp IS NOT NULL AND kv.exp <= ?`
)

// Set implements kv.Store, group-committed. A volatile counter at key is
// dropped: the key now holds a durable value.
func (s *Store) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if value == nil {
		value = []byte{}
	}
	s.volatile.drop(key)
	err := s.group(ctx, func(g *groupTx) error {
		st, err := g.stmt(setSQL)
		if err != nil {
			return err
		}
		_, err = st.ExecContext(g.ctx, key, value, expiry(s.now().UnixNano(), ttl))
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: kv set: %w", err)
	}
	s.afterKVWrite(ctx)
	return nil
}

// SetNX implements kv.Store, group-committed: one UPSERT whose update only
// fires over an expired key, so exactly one of any number of racing callers
// wins.
func (s *Store) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if value == nil {
		value = []byte{}
	}
	s.volatile.drop(key)
	var won bool
	err := s.group(ctx, func(g *groupTx) error {
		st, err := g.stmt(setNXSQL)
		if err != nil {
			return err
		}
		now := s.now().UnixNano()
		res, err := st.ExecContext(g.ctx, key, value, expiry(now, ttl), now)
		if err != nil {
			return err
		}
		rows, err := res.RowsAffected()
		won = rows == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("sqlite: kv setnx: %w", err)
	}
	s.afterKVWrite(ctx)
	return won, nil
}

// Delete implements kv.Store; it removes a volatile counter too.
func (s *Store) Delete(ctx context.Context, key string) error {
	s.volatile.drop(key)
	err := s.group(ctx, func(g *groupTx) error {
		_, err := g.conn.ExecContext(g.ctx, `DELETE FROM kv WHERE key = ?`, key)
		return err
	})
	if err != nil {
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

const storeCounterSQL = `INSERT INTO kv (key, v, n, exp) VALUES (?, NULL, ?, ?)
	ON CONFLICT (key) DO UPDATE SET v = NULL, n = excluded.n, exp = excluded.exp`

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

// Incr implements kv.Store.
//
// A volatile increment (or any increment of a key that lives in the
// volatile tier) is applied in memory; see volatileTier. A durable one
// that writes is one UPSERT (incrSQL) in a group-committed transaction,
// answered after its COMMIT. An increment that writes nothing (refused, or
// a read) is answered inside that transaction from the row it did not
// change; a read (Delta 0) first tries a plain read outside any
// transaction, whose answer stands when it shows that the read still
// writes nothing: that is what an atomic Incr at that moment answers.
func (s *Store) Incr(ctx context.Context, key string, in kv.Increment) (int64, bool, error) {
	now := s.now().UnixNano()
	if n, ok, done := s.volatile.incr(key, in, now); done {
		return n, ok, nil
	}
	if in.Delta == 0 {
		c, err := s.readCounter(ctx, key, now)
		if err != nil {
			return 0, false, fmt.Errorf("sqlite: kv incr: %w", err)
		}
		if next, admitted, write := step(c, in, now); !write {
			return next.n, admitted, nil
		}
	}
	var (
		val   int64
		ok    bool
		wrote bool
	)
	err := s.group(ctx, func(g *groupTx) error {
		var err error
		val, ok, wrote, err = s.incrInTx(g, key, in)
		return err
	})
	if err != nil {
		return 0, false, fmt.Errorf("sqlite: kv incr: %w", err)
	}
	if wrote {
		s.afterKVWrite(ctx)
	}
	return val, ok, nil
}

// incrInTx is Incr inside a group's transaction.
func (s *Store) incrInTx(g *groupTx, key string, in kv.Increment) (val int64, admitted, wrote bool, err error) {
	now := s.now().UnixNano()
	absent, _, absentWrites := step(counter{}, in, now)
	lim := int64(0)
	if in.Delta > 0 {
		lim = in.Max - in.Delta
		if in.Max < math.MinInt64+in.Delta {
			lim = math.MinInt64 // Max - Delta underflows: nothing is admitted
		}
	}
	st, err := g.stmt(incrSQL)
	if err != nil {
		return 0, false, false, err
	}
	err = st.QueryRowContext(g.ctx, key, absent.n, absentWrites, now, in.Floor, in.Delta, lim,
		expiry(now, in.TTL)).Scan(&val)
	if err == nil {
		return val, true, true, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, false, false, err
	}
	// Nothing written: the row, unchanged inside this transaction, answers.
	c, err := g.loadCounter(key, now)
	if err != nil {
		return 0, false, false, err
	}
	next, admitted, _ := step(c, in, now)
	return next.n, admitted, false, nil
}

// loadCounter reads key's counter inside the group's transaction.
func (g *groupTx) loadCounter(key string, now int64) (counter, error) {
	st, err := g.stmt(selectCounterSQL)
	if err != nil {
		return counter{}, err
	}
	return loadCounter(g.ctx, stmtRow{st}, key, now)
}

// storeCounter writes key's counter inside the group's transaction.
func (g *groupTx) storeCounter(key string, c counter) error {
	st, err := g.stmt(storeCounterSQL)
	if err != nil {
		return err
	}
	_, err = st.ExecContext(g.ctx, key, c.n, c.exp)
	return err
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

// IncrAll implements kv.BatchIncrementer, all or none.
//
// Durable increments are checked in order inside one group-committed
// transaction (a key repeated in the batch sees its earlier increments)
// and written only if every one is admitted. When the batch also holds
// volatile increments, those are checked and applied first, in memory
// under the volatile tier's lock; if one is refused nothing else is tried,
// and if the durable part then refuses or fails, the volatile part is
// undone: a counter still holding the value this call stored gets its
// previous value back exactly (a GCRA counter's undo is not a
// subtraction, the floor may have lifted it), and one another call has
// moved since gets this call's increments subtracted, which is what that
// caller would see had this call never been admitted. With a mix, the
// refused index reported is the first refused within the part that
// refused (the volatile part is checked first).
func (s *Store) IncrAll(ctx context.Context, keys []string, ins []kv.Increment) ([]int64, int, error) {
	if len(keys) != len(ins) {
		return nil, -1, errors.New("sqlite: kv IncrAll: keys and increments differ in length")
	}
	now := s.now().UnixNano()
	values := make([]int64, len(keys))
	vol, refused, undo := s.volatile.incrAll(keys, ins, now, values)
	if vol == len(keys) || refused >= 0 {
		if refused >= 0 && vol < len(keys) {
			// Report the durable counters' current values too.
			for i, k := range keys {
				if isVolatileAt(undo, i) {
					continue
				}
				c, err := s.readCounter(ctx, k, now)
				if err != nil {
					return nil, -1, fmt.Errorf("sqlite: kv IncrAll: %w", err)
				}
				values[i] = c.n
			}
		}
		return values, refused, nil
	}
	dkeys, dins, idx := keys, ins, []int(nil)
	if vol > 0 {
		dkeys, dins = make([]string, 0, len(keys)-vol), make([]kv.Increment, 0, len(keys)-vol)
		for i := range keys {
			if !isVolatileAt(undo, i) {
				dkeys, dins, idx = append(dkeys, keys[i]), append(dins, ins[i]), append(idx, i)
			}
		}
	}
	dvals := values
	if vol > 0 {
		dvals = make([]int64, len(dkeys))
	}
	drefused := -1
	err := s.group(ctx, func(g *groupTx) error {
		var err error
		drefused, err = incrAllInTx(g, dkeys, dins, s.now().UnixNano(), dvals)
		return err
	})
	if err != nil || drefused >= 0 {
		s.volatile.undo(undo, keys, s.now().UnixNano(), values)
	}
	if err != nil {
		return nil, -1, fmt.Errorf("sqlite: kv IncrAll: %w", err)
	}
	if vol > 0 {
		for j, i := range idx {
			values[i] = dvals[j]
		}
		if drefused >= 0 {
			drefused = idx[drefused]
		}
	}
	if drefused < 0 {
		s.afterKVWrite(ctx)
	}
	return values, drefused, nil
}

// incrAllInTx checks ins against keys in order and writes them only if all
// are admitted; values gets the values after (or, on a refusal, before).
func incrAllInTx(g *groupTx, keys []string, ins []kv.Increment, now int64, values []int64) (int, error) {
	orig := make(map[string]counter, len(keys))
	state := make(map[string]counter, len(keys))
	dirty := make(map[string]bool, len(keys))
	load := func(k string) (counter, error) {
		if c, ok := orig[k]; ok {
			return c, nil
		}
		c, err := g.loadCounter(k, now)
		if err == nil {
			orig[k] = c
		}
		return c, err
	}
	for i, k := range keys {
		c, seen := state[k]
		if !seen {
			var err error
			if c, err = load(k); err != nil {
				return -1, err
			}
		}
		next, admitted, write := step(c, ins[i], now)
		if !admitted {
			// Nothing is written: report every key's current value.
			for j, k := range keys {
				c, err := load(k)
				if err != nil {
					return -1, err
				}
				values[j] = c.n
			}
			return i, nil
		}
		state[k], values[i] = next, next.n
		if write {
			dirty[k] = true
		}
	}
	for _, k := range keys {
		if dirty[k] {
			if err := g.storeCounter(k, state[k]); err != nil {
				return -1, err
			}
			delete(dirty, k)
		}
	}
	return -1, nil
}

// Expired kv rows are swept by visiting the table in rowid order (the
// order rows were added), a chunk of rows per write transaction: there is
// no index on expiry times (keeping one moved an index entry on every
// write of a key with a TTL, a third of the pages a paid request wrote).
// Rows added about the same time tend to expire about the same time, so a
// chunk's expired rows are mostly neighbours on the table's pages. Reads
// treat an expired row as absent, so a sweep only gives the space back.
const (
	sweepChunkSQL = `SELECT count(*), max(id) FROM (SELECT id FROM kv WHERE id > ? ORDER BY id LIMIT ?)`
	sweepDelSQL   = `DELETE FROM kv WHERE id > ? AND id <= ? AND exp IS NOT NULL AND exp <= ?`
)

// sweepCursor is where the automatic sweep goes on: after the row with id
// after (0: from the table's start). The automatic sweep keeps it in the
// kv_sweep table too (loaded is set once it was read from there), so
// that a process restarted every thousand writes or so still visits every
// row in turn instead of the first ones again and again.
type sweepCursor struct {
	mu     sync.Mutex
	loaded bool
	after  int64
}

const (
	loadSweepSQL = `SELECT after FROM kv_sweep WHERE id = 1`
	saveSweepSQL = `INSERT INTO kv_sweep (id, after) VALUES (1, ?)
		ON CONFLICT (id) DO UPDATE SET after = excluded.after`
)

// SweepExpired deletes every expired kv row and returns how many it
// deleted: one pass over the table in rowid order, in chunks, each chunk's
// deletes in a write transaction of their own. The Store also sweeps by
// itself: after every 2,048 kv writes it visits the next 4,096 rows of
// the table, wrapping around at the end. Twice as many rows as writes in
// between is enough for sweeping to outpace what writes add (a write adds
// at most one row; a paid request's four add two), and every row visited
// costs: a step reads its rows twice (to count them, then to delete the
// expired ones), and at four rows a write the steps were 3.4% of a paid
// request's CPU.
func (s *Store) SweepExpired(ctx context.Context) (int64, error) {
	var c sweepCursor
	var total int64
	for {
		n, done, err := s.sweepStep(ctx, &c, s.sweepChunk, false)
		total += n
		if err != nil {
			return total, fmt.Errorf("sqlite: kv sweep: %w", err)
		}
		if done {
			return total, nil
		}
	}
}

// sweepStep deletes the expired rows among the limit keys after c and moves
// c past them; done reports that they reached the table's end (c is then
// back at the start). With save it also keeps the new cursor in kv_sweep.
//
// The step is one op of the group committer: it runs on the committer's
// connection, inside a group's transaction. A read or a write on another
// connection would cost more than the step itself: every commit made on
// one connection empties the page cache of every other connection at its
// next transaction, the committer's included.
func (s *Store) sweepStep(ctx context.Context, c *sweepCursor, limit int, save bool) (deleted int64, done bool, err error) {
	var (
		n    int
		last sql.NullInt64
	)
	after := c.after
	err = s.group(ctx, func(g *groupTx) error {
		deleted, n, last = 0, 0, sql.NullInt64{}
		st, err := g.stmt(sweepChunkSQL)
		if err != nil {
			return err
		}
		if err := st.QueryRowContext(g.ctx, after, limit).Scan(&n, &last); err != nil {
			return err
		}
		if n > 0 {
			res, err := g.exec(sweepDelSQL, after, last.Int64, s.now().UnixNano())
			if err != nil {
				return err
			}
			if deleted, err = res.RowsAffected(); err != nil {
				return err
			}
		}
		if !save {
			return nil
		}
		next := int64(0)
		if n >= limit {
			next = last.Int64
		}
		_, err = g.exec(saveSweepSQL, next)
		return err
	})
	if err != nil {
		return 0, false, err
	}
	if n < limit {
		c.after = 0
		return deleted, true, nil
	}
	c.after = last.Int64
	return deleted, false, nil
}

// afterKVWrite counts a kv write and, every sweepEvery writes, sweeps the
// next sweepChunk rows. A step holds the committer while it runs (about
// 7 ms for 4096 rows of which two thirds expired, on 2 vCPUs), so steps are
// kept small and frequent rather than large and rare.
func (s *Store) afterKVWrite(ctx context.Context) {
	if s.kvWrites.Add(1)%int64(s.sweepEvery) != 0 {
		return
	}
	c := &s.sweep
	if !c.mu.TryLock() {
		return // the sweep before this one is still running
	}
	defer c.mu.Unlock()
	if !c.loaded {
		err := s.read(ctx, func() error { return s.db.QueryRowContext(ctx, loadSweepSQL).Scan(&c.after) })
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return // the next sweep tries again
		}
		c.loaded = true
	}
	_, _, _ = s.sweepStep(ctx, c, s.sweepChunk, true)
}

// volatileTier keeps the counters of volatile increments (kv.Increment's
// Volatile: rate-limit windows) in memory. The SQLite file has one writer
// process on a single node, so these counters need no disk: keeping them
// here takes every free request's rate-limit writes off SQLite's single
// writer, and a crash merely forgets recent rate history, which is what
// Volatile allows. They are exact within this Store (one mutex makes every
// read-compare-write atomic), but not shared with other Stores or
// processes on the same file: run one gateway process per SQLite file, as
// the single-node default does.
//
// A key that lives in the tier is served by it even when an increment does
// not say Volatile, so a read or an undo that forgot the flag still sees
// the counter; Set, SetNX and Delete drop it.
type volatileTier struct {
	mu     sync.Mutex
	m      map[string]counter
	writes int
}

// sweepVolatileEvery is the number of volatile writes between sweeps of
// the tier's expired counters.
const sweepVolatileEvery = 4096

// live returns key's counter if it is in the tier and not expired; an
// expired one is removed. The caller holds mu.
func (v *volatileTier) live(key string, now int64) (counter, bool) {
	c, ok := v.m[key]
	if !ok {
		return counter{}, false
	}
	if c.exp.Valid && c.exp.Int64 <= now {
		delete(v.m, key)
		return counter{}, false
	}
	return c, true
}

// put stores c at key and sweeps expired counters now and then. The caller
// holds mu.
func (v *volatileTier) put(key string, c counter, now int64) {
	if v.m == nil {
		v.m = make(map[string]counter)
	}
	v.m[key] = c
	if v.writes++; v.writes%sweepVolatileEvery == 0 {
		for k, c := range v.m {
			if c.exp.Valid && c.exp.Int64 <= now {
				delete(v.m, k)
			}
		}
	}
}

func (v *volatileTier) get(key string, now int64) (counter, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.live(key, now)
}

func (v *volatileTier) drop(key string) {
	v.mu.Lock()
	delete(v.m, key)
	v.mu.Unlock()
}

// incr applies in to key when in is volatile or key lives in the tier,
// and reports done; otherwise it does nothing and done is false.
func (v *volatileTier) incr(key string, in kv.Increment, now int64) (n int64, admitted, done bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	c, ok := v.live(key, now)
	if !ok && !in.Volatile {
		return 0, false, false
	}
	next, admitted, write := step(c, in, now)
	if write {
		v.put(key, next, now)
	}
	return next.n, admitted, true
}

// volatileUndo is what IncrAll needs to undo its volatile part: which
// indices of the batch were volatile and, per key, the counter before the
// call, the counter the call stored and the sum of its deltas.
type volatileUndo struct {
	mask []bool
	keys []string
	prev []counter
	set  []counter
	sum  []int64
}

func isVolatileAt(u *volatileUndo, i int) bool { return u != nil && u.mask[i] }

// incrAll checks and applies the volatile increments of a batch (those
// flagged Volatile and those on keys living in the tier), all or none. It
// returns how many there were, the index of the first refused one (-1 when
// all were applied; values then holds their new values) and what undo
// needs. On a refusal nothing is applied and values holds the volatile
// keys' current values.
func (v *volatileTier) incrAll(keys []string, ins []kv.Increment, now int64, values []int64) (int, int, *volatileUndo) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var u *volatileUndo
	vol := 0
	for i, k := range keys {
		if !ins[i].Volatile {
			if _, ok := v.live(k, now); !ok {
				continue
			}
		}
		if u == nil {
			u = &volatileUndo{mask: make([]bool, len(keys))}
		}
		u.mask[i] = true
		vol++
	}
	if vol == 0 {
		return 0, -1, nil
	}
	// Stage the increments in order; a repeated key sees its earlier ones.
	state := make([]counter, 0, vol)
	at := func(k string) int {
		for j, key := range u.keys {
			if key == k {
				return j
			}
		}
		return -1
	}
	for i, k := range keys {
		if !u.mask[i] {
			continue
		}
		j := at(k)
		if j < 0 {
			c, _ := v.live(k, now)
			u.keys, u.prev, u.sum = append(u.keys, k), append(u.prev, c), append(u.sum, 0)
			state = append(state, c)
			j = len(u.keys) - 1
		}
		next, admitted, _ := step(state[j], ins[i], now)
		if !admitted {
			for i, k := range keys {
				if u.mask[i] {
					c, _ := v.live(k, now) // nothing was applied
					values[i] = c.n
				}
			}
			u.keys, u.prev, u.sum = nil, nil, nil
			return vol, i, u
		}
		state[j], values[i] = next, next.n
		u.sum[j] += ins[i].Delta
	}
	u.set = make([]counter, len(u.keys))
	for j, k := range u.keys {
		if state[j] != u.prev[j] {
			v.put(k, state[j], now)
		}
		u.set[j] = state[j]
	}
	return vol, -1, u
}

// undo takes back what incrAll applied and leaves the volatile keys'
// current values in values.
func (v *volatileTier) undo(u *volatileUndo, keys []string, now int64, values []int64) {
	if u == nil || len(u.keys) == 0 {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	cur := make([]int64, len(u.keys))
	for j, k := range u.keys {
		c, ok := v.m[k] // expired or not: compare what is stored
		switch {
		case ok && c == u.set[j] || !ok && !u.set[j].exists:
			// Untouched since: restore the previous counter exactly.
			if u.prev[j].exists {
				v.m[k] = u.prev[j]
			} else {
				delete(v.m, k)
			}
			cur[j] = u.prev[j].n
		default:
			// Moved by another call since: subtract this call's deltas.
			c, _ = v.live(k, now)
			if next, _, write := step(c, kv.Increment{Delta: -u.sum[j], Max: kv.Unbounded}, now); write {
				v.put(k, next, now)
				c = next
			}
			cur[j] = c.n
		}
	}
	for i, k := range keys {
		if !u.mask[i] {
			continue
		}
		for j, key := range u.keys {
			if key == k {
				values[i] = cur[j]
			}
		}
	}
}
