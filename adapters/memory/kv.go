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

// sweepStep is how many stored entries each write to a shard examines for
// expiry. Every write adds at most one key and looks at sweepStep of them,
// so the sweep cursor laps a shard at least sweepStep times faster than the
// shard grows: a key that expired is reclaimed within about len/sweepStep
// writes to its shard, at a constant cost per write, with no pause and no
// background goroutine.
const sweepStep = 4

// KV is an in-memory kv.Store and kv.BatchIncrementer. Expired keys are
// dropped when touched and reclaimed incrementally: each write to a shard
// also examines the next sweepStep entries of that shard (a cursor walking
// a dense slice) and removes the expired ones. Memory therefore follows the
// live keys, amortised O(1) per write, without a janitor goroutine (there is
// nothing to Close).
type KV struct {
	seed   maphash.Seed
	now    func() time.Time
	shards [kvShards]kvShard
}

// kvShard keeps its entries in a dense slice, indexed by key, so that the
// sweep can resume where it stopped (a Go map cannot be iterated
// incrementally) and a removal is a swap with the last entry.
type kvShard struct {
	mu      sync.Mutex
	index   map[string]int32 // key -> position in entries
	entries []kvEntry
	cursor  int // next entry the sweep examines
	peak    int // largest len(index) since index was last rebuilt
}

type kvEntry struct {
	key string
	kvItem
}

type kvItem struct {
	value   []byte // nil for counters
	n       int64
	counter bool
	expires int64 // unix nanoseconds; 0 means never
}

func (it *kvItem) expired(now int64) bool { return it.expires != 0 && it.expires <= now }

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
		s.shards[i].index = make(map[string]int32)
	}
	return s
}

func (s *KV) shard(key string) *kvShard { return &s.shards[s.shardIndex(key)] }

// live returns the position of key's entry, or -1 when it is absent or
// expired (an expired entry is removed on the way).
func (sh *kvShard) live(key string, now int64) int {
	i, ok := sh.index[key]
	if !ok {
		return -1
	}
	if sh.entries[i].expired(now) {
		sh.remove(int(i))
		return -1
	}
	return int(i)
}

// get returns a copy of key's live item, the zero item when there is none.
func (sh *kvShard) get(key string, now int64) (kvItem, bool) {
	if i := sh.live(key, now); i >= 0 {
		return sh.entries[i].kvItem, true
	}
	return kvItem{}, false
}

// put stores it at key, reusing the key's entry when there is one.
func (sh *kvShard) put(key string, it kvItem) {
	if i, ok := sh.index[key]; ok {
		sh.entries[i].kvItem = it
		return
	}
	sh.index[key] = int32(len(sh.entries))
	sh.entries = append(sh.entries, kvEntry{key: key, kvItem: it})
	sh.peak = max(sh.peak, len(sh.index))
}

// remove drops the entry at position i: the last entry moves into its
// place.
func (sh *kvShard) remove(i int) {
	last := len(sh.entries) - 1
	delete(sh.index, sh.entries[i].key)
	if i != last {
		sh.entries[i] = sh.entries[last]
		sh.index[sh.entries[i].key] = int32(i)
	}
	sh.entries[last] = kvEntry{} // let the key and value be collected
	sh.entries = sh.entries[:last]
	sh.shrink()
}

// shrink gives memory back once the shard has lost most of its entries.
// Go maps never shrink by themselves, so the index is rebuilt once it holds
// a quarter of its peak: O(n) work after at least 3n removals, amortised
// O(1) per removal.
func (sh *kvShard) shrink() {
	n := len(sh.entries)
	if c := cap(sh.entries); c > 64 && n < c/4 {
		sh.entries = append(make([]kvEntry, 0, 2*n), sh.entries...)
	}
	if sh.peak >= 1024 && n < sh.peak/4 {
		index := make(map[string]int32, n)
		for i := range sh.entries {
			index[sh.entries[i].key] = int32(i)
		}
		sh.index, sh.peak = index, n
	}
}

// sweep examines the next sweepStep entries from the cursor and removes
// the expired ones. Called once per write, under the shard lock.
func (sh *kvShard) sweep(now int64) {
	for range sweepStep {
		if len(sh.entries) == 0 {
			return
		}
		if sh.cursor >= len(sh.entries) {
			sh.cursor = 0
		}
		if sh.entries[sh.cursor].expired(now) {
			sh.remove(sh.cursor) // the last entry moved here: examine it next
		} else {
			sh.cursor++
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
	it, ok := sh.get(key, s.now().UnixNano())
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
	sh.put(key, kvItem{value: append([]byte{}, value...), expires: expiry(now, ttl)})
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
	defer sh.sweep(now)
	if sh.live(key, now) >= 0 {
		return false, nil
	}
	sh.put(key, kvItem{value: append([]byte{}, value...), expires: expiry(now, ttl)})
	return true, nil
}

// Delete implements kv.Store.
func (s *KV) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.now().UnixNano()
	sh := s.shard(key)
	sh.mu.Lock()
	if i, ok := sh.index[key]; ok {
		sh.remove(int(i))
	}
	sh.sweep(now)
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
	n, ok := sh.incr(key, in, now)
	sh.sweep(now)
	sh.mu.Unlock()
	return n, ok, nil
}

// incr applies in under the shard lock.
func (sh *kvShard) incr(key string, in kv.Increment, now int64) (int64, bool) {
	it, _ := sh.get(key, now)
	cur := it.n
	n, ok := kv.Apply(cur, in)
	if !ok {
		return n, ok
	}
	if in.Delta == 0 && in.Floor <= cur {
		return n, true // a read: leave the key (and its absence) alone
	}
	sh.write(key, it, n, in.TTL, now)
	return n, true
}

// write stores counter value n at key, it being the key's live item (zero
// when absent): a ttl > 0 renews the expiry, otherwise it is kept.
func (sh *kvShard) write(key string, it kvItem, n int64, ttl time.Duration, now int64) {
	it.counter, it.value, it.n = true, nil, n
	if ttl > 0 {
		it.expires = expiry(now, ttl)
	}
	sh.put(key, it)
}

// IncrAll implements kv.BatchIncrementer: all increments or none, atomically.
// Each shard it locks is swept once, like any other write.
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
			sh := &s.shards[i]
			sh.sweep(now)
			sh.mu.Unlock()
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
			it, _ := s.shards[idx[i]].get(k, now)
			cur = it.n
		}
		n, ok := kv.Apply(cur, ins[i])
		if !ok {
			for j, k := range keys {
				it, _ := s.shards[idx[j]].get(k, now)
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
		sh := &s.shards[idx[i]]
		it, ok := sh.get(k, now)
		if ins[i].Delta == 0 && earlier(keys, i) < 0 && (!ok || ins[i].Floor <= it.n) {
			continue // a read: leave the key (and its absence) alone
		}
		sh.write(k, it, values[i], ins[i].TTL, now)
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
		for j := range sh.entries {
			if !sh.entries[j].expired(now) {
				total++
			}
		}
		sh.mu.Unlock()
	}
	return total
}

// Stored returns the number of keys the store holds, live or expired but
// not reclaimed yet: what its memory follows.
func (s *KV) Stored() int {
	total := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		total += len(sh.entries)
		sh.mu.Unlock()
	}
	return total
}
