package memory

import (
	"context"
	"hash/maphash"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/402claw/dispatcher/kv"
)

// kvShards spreads keys over independent locks so parallel requests for
// different tenants and callers do not contend.
const kvShards = 64

// KV is an in-memory kv.Store and kv.BatchIncrementer. Expired keys are
// dropped lazily when touched and by a sweep every so many writes.
type KV struct {
	seed   maphash.Seed
	now    func() time.Time
	shards [kvShards]kvShard
}

type kvShard struct {
	mu     sync.Mutex
	items  map[string]kvItem
	writes int
}

type kvItem struct {
	value   []byte // nil for counters
	n       int64
	counter bool
	expires int64 // unix nanoseconds; 0 means never
}

var (
	_ kv.Store            = (*KV)(nil)
	_ kv.BatchIncrementer = (*KV)(nil)
)

// NewKV returns an empty in-memory KV store.
func NewKV() *KV { return NewKVWithClock(time.Now) }

// NewKVWithClock returns an empty store whose expiry follows now, for tests
// that move time by hand.
func NewKVWithClock(now func() time.Time) *KV {
	s := &KV{now: now, seed: maphash.MakeSeed()}
	for i := range s.shards {
		s.shards[i].items = make(map[string]kvItem)
	}
	return s
}

func (s *KV) shard(key string) *kvShard { return &s.shards[s.shardIndex(key)] }

func (sh *kvShard) live(key string, now int64) (kvItem, bool) {
	it, ok := sh.items[key]
	if !ok {
		return kvItem{}, false
	}
	if it.expires != 0 && it.expires <= now {
		delete(sh.items, key)
		return kvItem{}, false
	}
	return it, true
}

// sweep drops expired items now and then, so keys that are never touched
// again (old quota windows, idle callers) do not accumulate.
func (sh *kvShard) sweep(now int64) {
	sh.writes++
	if sh.writes < 4096 {
		return
	}
	sh.writes = 0
	for k, it := range sh.items {
		if it.expires != 0 && it.expires <= now {
			delete(sh.items, k)
		}
	}
}

func expiry(now int64, ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	if int64(ttl) > math.MaxInt64-now {
		return 0 // past the end of the clock: never expires
	}
	return now + int64(ttl)
}

// Get implements kv.Store.
func (s *KV) Get(ctx context.Context, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sh := s.shard(key)
	sh.mu.Lock()
	it, ok := sh.live(key, s.now().UnixNano())
	sh.mu.Unlock()
	if !ok {
		return nil, kv.ErrNotFound
	}
	if it.counter {
		return strconv.AppendInt(nil, it.n, 10), nil
	}
	return append([]byte(nil), it.value...), nil
}

// Set implements kv.Store.
func (s *KV) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.now().UnixNano()
	sh := s.shard(key)
	sh.mu.Lock()
	sh.items[key] = kvItem{value: append([]byte{}, value...), expires: expiry(now, ttl)}
	sh.sweep(now)
	sh.mu.Unlock()
	return nil
}

// SetNX implements kv.Store.
func (s *KV) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	now := s.now().UnixNano()
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.live(key, now); ok {
		return false, nil
	}
	sh.items[key] = kvItem{value: append([]byte{}, value...), expires: expiry(now, ttl)}
	sh.sweep(now)
	return true, nil
}

// Delete implements kv.Store.
func (s *KV) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	sh := s.shard(key)
	sh.mu.Lock()
	delete(sh.items, key)
	sh.mu.Unlock()
	return nil
}

// Incr implements kv.Store.
func (s *KV) Incr(ctx context.Context, key string, in kv.Increment) (int64, bool, error) {
	if err := ctx.Err(); err != nil {
		return 0, false, err
	}
	now := s.now().UnixNano()
	sh := s.shard(key)
	sh.mu.Lock()
	n, ok := sh.incr(key, in, now, true)
	sh.sweep(now)
	sh.mu.Unlock()
	return n, ok, nil
}

// incr applies in under the shard lock. With apply false it only reports
// what would happen.
func (sh *kvShard) incr(key string, in kv.Increment, now int64, apply bool) (int64, bool) {
	it, _ := sh.live(key, now)
	cur := it.n
	n, ok := kv.Apply(cur, in)
	if !ok || !apply {
		return n, ok
	}
	if in.Delta == 0 && in.Floor <= cur {
		return n, true // a read: leave the key (and its absence) alone
	}
	it.counter, it.value, it.n = true, nil, n
	if in.TTL > 0 {
		it.expires = expiry(now, in.TTL)
	}
	sh.items[key] = it
	return n, true
}

// IncrAll implements kv.BatchIncrementer: all increments or none, atomically.
func (s *KV) IncrAll(ctx context.Context, keys []string, ins []kv.Increment) ([]int64, int, error) {
	if err := ctx.Err(); err != nil {
		return nil, -1, err
	}
	if len(keys) != len(ins) {
		return nil, -1, errLengths
	}
	now := s.now().UnixNano()
	// Hash each key once; lock each distinct shard once, in index order,
	// so that batches never deadlock with each other.
	var idxBuf, lockBuf [8]int
	idx := idxBuf[:0]
	for _, k := range keys {
		idx = append(idx, s.shardIndex(k))
	}
	locks := append(lockBuf[:0], idx...)
	sortSmall(locks)
	locks = dedupSorted(locks)
	for _, i := range locks {
		s.shards[i].mu.Lock()
	}
	defer func() {
		for _, i := range locks {
			s.shards[i].mu.Unlock()
		}
	}()
	values := make([]int64, len(keys))
	// Decide first, applying the steps in order so that a key named twice
	// sees its earlier step; then write.
	for i, k := range keys {
		var cur int64
		if j := earlier(keys, i); j >= 0 {
			cur = values[j]
		} else {
			it, _ := s.shards[idx[i]].live(k, now)
			cur = it.n
		}
		n, ok := kv.Apply(cur, ins[i])
		if !ok {
			for j, k := range keys {
				it, _ := s.shards[idx[j]].live(k, now)
				values[j] = it.n
			}
			return values, i, nil
		}
		values[i] = n
	}
	for i, k := range keys {
		if later(keys, i) {
			continue // the last step on a key writes its final value
		}
		if ins[i].Delta == 0 && earlier(keys, i) < 0 {
			if it, ok := s.shards[idx[i]].live(k, now); !ok || ins[i].Floor <= it.n {
				continue // a read: leave the key (and its absence) alone
			}
		}
		sh := &s.shards[idx[i]]
		it, _ := sh.live(k, now)
		it.counter, it.value, it.n = true, nil, values[i]
		if ins[i].TTL > 0 {
			it.expires = expiry(now, ins[i].TTL)
		}
		sh.items[k] = it
	}
	return values, -1, nil
}

// earlier returns the last index before i that names keys[i], or -1.
func earlier(keys []string, i int) int {
	for j := i - 1; j >= 0; j-- {
		if keys[j] == keys[i] {
			return j
		}
	}
	return -1
}

// later reports whether keys[i] is named again after i.
func later(keys []string, i int) bool {
	for j := i + 1; j < len(keys); j++ {
		if keys[j] == keys[i] {
			return true
		}
	}
	return false
}

func sortSmall(a []int) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

func dedupSorted(a []int) []int {
	out := a[:0]
	for i, v := range a {
		if i == 0 || v != a[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// shardIndex hashes key with the runtime's fast string hash.
func (s *KV) shardIndex(key string) int {
	return int(maphash.String(s.seed, key) % kvShards)
}

// Len returns the number of live keys, for tests of expiry.
func (s *KV) Len() int {
	now := s.now().UnixNano()
	total := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for _, it := range sh.items {
			if it.expires == 0 || it.expires > now {
				total++
			}
		}
		sh.mu.Unlock()
	}
	return total
}
