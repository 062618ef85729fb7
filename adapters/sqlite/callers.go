package sqlite

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Rollups name callers by their usage_callers id and keep the calls per
// caller of an (hour, API) packed in one BLOB: (id, calls) pairs, unsigned
// varints, ids strictly ascending.

// callerCount is one (id, calls) pair.
type callerCount struct{ id, n int64 }

var errBadCallers = errors.New("corrupt packed callers")

// decodeCallers calls fn for each pair of a packed blob.
func decodeCallers(b []byte, fn func(id, n int64) error) error {
	for len(b) > 0 {
		id, k := binary.Uvarint(b)
		if k <= 0 {
			return errBadCallers
		}
		b = b[k:]
		n, k := binary.Uvarint(b)
		if k <= 0 || id > 1<<62 || n > 1<<62 {
			return errBadCallers
		}
		b = b[k:]
		if err := fn(int64(id), int64(n)); err != nil {
			return err
		}
	}
	return nil
}

// mergeCallers adds delta (in any order, ids unique) to the packed old and
// returns the new packed blob.
func mergeCallers(old []byte, delta []callerCount) ([]byte, error) {
	slices.SortFunc(delta, func(a, b callerCount) int { return int(min(max(a.id-b.id, -1), 1)) })
	out := make([]byte, 0, len(old)+len(delta)*6)
	put := func(id, n int64) {
		out = binary.AppendUvarint(out, uint64(id))
		out = binary.AppendUvarint(out, uint64(n))
	}
	i, prev := 0, int64(0)
	err := decodeCallers(old, func(id, n int64) error {
		if id <= prev {
			return errBadCallers
		}
		prev = id
		for i < len(delta) && delta[i].id < id {
			put(delta[i].id, delta[i].n)
			i++
		}
		if i < len(delta) && delta[i].id == id {
			n += delta[i].n
			i++
		}
		put(id, n)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for ; i < len(delta); i++ {
		put(delta[i].id, delta[i].n)
	}
	return out, nil
}

// maxCachedCallerIDs bounds the write side's caller -> id cache; past it
// the cache starts over (misses cost one indexed read).
const maxCachedCallerIDs = 1 << 20

// callerCache caches usage_callers, which only grows: ids by caller for
// Append, and names by id (a dense slice, index = id) for scans. The names
// slice holds one string per distinct caller ever seen, as the memory
// store's interning does.
type callerCache struct {
	mu   sync.RWMutex
	ids  map[string]int64
	list []string // list[id] is the caller of id; list[0] is unused
}

func (c *callerCache) lookup(caller string) (int64, bool) {
	c.mu.RLock()
	id, ok := c.ids[caller]
	c.mu.RUnlock()
	return id, ok
}

// remember caches ids of a committed transaction.
func (c *callerCache) remember(added map[string]int64) {
	if len(added) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ids == nil || len(c.ids)+len(added) > maxCachedCallerIDs {
		c.ids = make(map[string]int64, len(added))
	}
	for k, v := range added {
		c.ids[k] = v
	}
}

// names returns the id -> caller slice, first loading on q the ids added
// since the last call. The returned slice is never modified afterwards.
func (c *callerCache) names(ctx context.Context, q querier) ([]string, error) {
	c.mu.RLock()
	known := len(c.list)
	c.mu.RUnlock()
	rows, err := q.QueryContext(ctx, `SELECT id, caller_id FROM usage_callers WHERE id >= ? ORDER BY id`, max(known, 1))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	type row struct {
		id     int64
		caller string
	}
	var fresh []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.caller); err != nil {
			return nil, err
		}
		fresh = append(fresh, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.list) == 0 {
		c.list = append(c.list, "")
	}
	for _, r := range fresh {
		switch {
		case r.id < int64(len(c.list)):
			// Loaded meanwhile by a concurrent scan.
		case r.id == int64(len(c.list)):
			c.list = append(c.list, r.caller)
		default:
			return nil, fmt.Errorf("usage_callers: id %d follows %d: ids are not dense", r.id, len(c.list)-1)
		}
	}
	return c.list[:len(c.list):len(c.list)], nil
}

// callerIDs resolves caller ids to usage_callers ids inside one Append
// transaction, inserting the new ones. added collects what the transaction
// resolved from the database, cached only once it committed (a rolled back
// insert's id is handed out again).
type callerIDs struct {
	s        *Store
	q        querier
	sel, ins *sql.Stmt
	added    map[string]int64
}

func newCallerIDs(s *Store, q querier) *callerIDs {
	return &callerIDs{s: s, q: q, added: map[string]int64{}}
}

func (c *callerIDs) get(ctx context.Context, caller string) (int64, error) {
	if id, ok := c.added[caller]; ok {
		return id, nil
	}
	if id, ok := c.s.callers.lookup(caller); ok {
		return id, nil
	}
	var err error
	if c.sel == nil {
		if c.sel, err = c.q.PrepareContext(ctx, `SELECT id FROM usage_callers WHERE caller_id = ?`); err != nil {
			return 0, err
		}
		if c.ins, err = c.q.PrepareContext(ctx, `INSERT INTO usage_callers (caller_id) VALUES (?) RETURNING id`); err != nil {
			return 0, err
		}
	}
	var id int64
	err = c.sel.QueryRowContext(ctx, caller).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		err = c.ins.QueryRowContext(ctx, caller).Scan(&id)
	}
	if err != nil {
		return 0, fmt.Errorf("caller id %q: %w", caller, err)
	}
	c.added[caller] = id
	return id, nil
}

func (c *callerIDs) close() {
	if c.sel != nil {
		_ = c.sel.Close()
	}
	if c.ins != nil {
		_ = c.ins.Close()
	}
}
