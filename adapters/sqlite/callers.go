package sqlite

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// Before migration 4, rollups named callers by their usage_callers id and
// kept the calls per caller of an (hour, API) packed in one BLOB: (id,
// calls) pairs, unsigned varints, ids strictly ascending. Rows are now
// written with bounded metrics.CallerSet blobs and nothing is added to
// usage_callers any more; this file only reads the old form, for rows
// written before (see migration 4).

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

// callerCache caches the names of usage_callers by id (a dense slice,
// index = id), for reading rows written before migration 4. The table no
// longer grows, so neither does the cache.
type callerCache struct {
	mu   sync.RWMutex
	list []string // list[id] is the caller of id; list[0] is unused
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
