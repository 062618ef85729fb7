package memory

import (
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/402claw/dispatcher/metrics"
)

// EventsConfig configures an in-memory usage-event store. Zero values are
// the defaults.
type EventsConfig struct {
	// MaxRecent is how many raw events are kept for Recent: the most
	// recently appended ones. Default 10,000.
	MaxRecent int
	// DedupWindow is how long a request id is remembered for
	// de-duplication, counted from when it was appended. Default 48h.
	DedupWindow time.Duration
	// MaxDedup bounds the number of remembered request ids; past it the
	// oldest are forgotten early. Default 4,000,000 (about 130 MB).
	MaxDedup int
	// Now is the clock used to age request ids. Default time.Now.
	Now func() time.Time
}

// Events is an in-memory metrics.Store, safe for concurrent use.
//
// Memory stays bounded however many events are appended: raw events live in
// a ring of MaxRecent, request ids in a FIFO pruned by age and count (kept
// as two 64-bit seeded hashes, 16 bytes, rather than strings), and rollups
// grow with (API, hour) pairs: each rollup's caller and source sets hold at
// most metrics.ExactCallers ids before they turn into fixed-size sketches
// (metrics.CallerSet), however many callers, real or minted, an hour sees.
// Caller ids are never interned; only calls (countable events) reach a
// caller set. Rollups are kept for all time.
type Events struct {
	cfg  EventsConfig
	seed [2]maphash.Seed

	mu     sync.RWMutex
	ring   []metrics.UsageEvent // circular, len <= MaxRecent
	next   int                  // ring slot of the next event
	seq    []uint64             // append sequence per ring slot
	total  uint64               // events ever appended
	seen   map[[2]uint64]struct{}
	fifo   []dedupEntry // request ids in append order
	head   int          // first live entry of fifo
	hours  map[int64]map[string]*metrics.HourRollup
	sorted []int64 // keys of hours, ascending
	// names interns API, owner and directory ids, so that the rollups
	// share one copy of each string instead of pinning one per event. It
	// grows with the tenant directory, not with callers.
	names map[string]string
}

type dedupEntry struct {
	key [2]uint64
	at  int64 // unix nanos when appended
}

var (
	_ metrics.Store         = (*Events)(nil)
	_ metrics.RollupScanner = (*Events)(nil)
)

// NewEvents returns an empty store.
func NewEvents(cfg EventsConfig) (*Events, error) {
	if cfg.MaxRecent == 0 {
		cfg.MaxRecent = 10_000
	}
	if cfg.DedupWindow == 0 {
		cfg.DedupWindow = 48 * time.Hour
	}
	if cfg.MaxDedup == 0 {
		cfg.MaxDedup = 4_000_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxRecent < 0 || cfg.DedupWindow < 0 || cfg.MaxDedup < 0 {
		return nil, fmt.Errorf("memory: negative EventsConfig value")
	}
	return &Events{
		cfg:   cfg,
		seed:  [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		seen:  make(map[[2]uint64]struct{}),
		hours: make(map[int64]map[string]*metrics.HourRollup),
		names: make(map[string]string),
	}, nil
}

func (s *Events) key(id string) [2]uint64 {
	return [2]uint64{maphash.String(s.seed[0], id), maphash.String(s.seed[1], id)}
}

// Append implements metrics.Store.
func (s *Events) Append(ctx context.Context, events ...metrics.UsageEvent) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	norm := make([]metrics.UsageEvent, len(events))
	keys := make([][2]uint64, len(events))
	for i, e := range events {
		n, err := metrics.NormalizeUsageEvent(e)
		if err != nil {
			return fmt.Errorf("memory: append: %w", err)
		}
		norm[i], keys[i] = n, s.key(n.RequestID)
	}
	now := s.cfg.Now().UnixNano()

	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
	for i, e := range norm {
		if _, dup := s.seen[keys[i]]; dup {
			continue
		}
		s.seen[keys[i]] = struct{}{}
		s.fifo = append(s.fifo, dedupEntry{key: keys[i], at: now})
		s.addRawLocked(e)
		s.rollupLocked(e)
	}
	s.pruneLocked(now)
	return nil
}

// pruneLocked forgets request ids older than DedupWindow or beyond MaxDedup.
func (s *Events) pruneLocked(now int64) {
	cutoff := now - int64(s.cfg.DedupWindow)
	for s.head < len(s.fifo) && (s.fifo[s.head].at < cutoff || len(s.fifo)-s.head > s.cfg.MaxDedup) {
		delete(s.seen, s.fifo[s.head].key)
		s.head++
	}
	// Compact once the dead prefix is at least half the slice, so the
	// FIFO's backing array stays within twice its live size.
	if s.head > 1024 && s.head*2 >= len(s.fifo) {
		n := copy(s.fifo, s.fifo[s.head:])
		clear(s.fifo[n:])
		s.fifo = s.fifo[:n]
		s.head = 0
	}
}

func (s *Events) addRawLocked(e metrics.UsageEvent) {
	if s.cfg.MaxRecent == 0 {
		return
	}
	s.total++
	if len(s.ring) < s.cfg.MaxRecent {
		s.ring = append(s.ring, e)
		s.seq = append(s.seq, s.total)
		return
	}
	s.ring[s.next], s.seq[s.next] = e, s.total
	s.next = (s.next + 1) % s.cfg.MaxRecent
}

func (s *Events) intern(v string) string {
	if c, ok := s.names[v]; ok {
		return c
	}
	v = strings.Clone(v)
	s.names[v] = v
	return v
}

func (s *Events) rollupLocked(e metrics.UsageEvent) {
	e.APIID, e.Owner, e.Directory = s.intern(e.APIID), s.intern(e.Owner), s.intern(e.Directory)
	hour := metrics.HourOf(e.Time)
	h := hour.Unix()
	apis, ok := s.hours[h]
	if !ok {
		apis = make(map[string]*metrics.HourRollup)
		s.hours[h] = apis
		i, _ := slices.BinarySearch(s.sorted, h)
		s.sorted = slices.Insert(s.sorted, i, h)
	}
	r, ok := apis[e.APIID]
	if !ok {
		nr := metrics.NewHourRollup(e.APIID, hour)
		r = &nr
		apis[e.APIID] = r
	}
	r.Add(e)
}

// RollupSize reports what the rollups hold in memory: the number of
// (API, hour) rollups, and the ids their caller and source sets keep
// (exact ids and heavy-hitter counters) plus the interned names.
func (s *Events) RollupSize() (rollups, ids int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, apis := range s.hours {
		for _, r := range apis {
			rollups++
			ids += r.Callers.Entries() + r.Sources.Entries()
		}
	}
	return rollups, ids + len(s.names)
}

// DedupLen returns how many request ids the store currently remembers.
func (s *Events) DedupLen() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.seen)
}

// Recent implements metrics.Store. It sorts a copy of the ring, at most
// MaxRecent events, so it is meant for the admin route, not a hot path.
func (s *Events) Recent(ctx context.Context, limit int) ([]metrics.UsageEvent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit < 1 {
		return nil, fmt.Errorf("memory: recent: limit %d: %w", limit, metrics.ErrInvalidQuery)
	}
	s.mu.RLock()
	idx := make([]int, len(s.ring))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool {
		ea, eb := &s.ring[idx[a]], &s.ring[idx[b]]
		if !ea.Time.Equal(eb.Time) {
			return ea.Time.After(eb.Time)
		}
		return s.seq[idx[a]] > s.seq[idx[b]]
	})
	out := make([]metrics.UsageEvent, 0, min(limit, len(idx)))
	for _, i := range idx[:min(limit, len(idx))] {
		out = append(out, s.ring[i])
	}
	s.mu.RUnlock()
	return out, nil
}

// ScanRollups implements metrics.RollupScanner: it visits the rollups in
// range under the read lock, without copying them.
func (s *Events) ScanRollups(ctx context.Context, q metrics.RollupQuery, fn func(*metrics.HourRollup)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := q.Validate(); err != nil {
		return fmt.Errorf("memory: rollups: %w", err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, h := range s.hoursLocked(q) {
		for _, r := range s.hours[h] {
			fn(r)
		}
	}
	return nil
}

// hoursLocked returns the sorted hour keys in q's range.
func (s *Events) hoursLocked(q metrics.RollupQuery) []int64 {
	lo, hi := 0, len(s.sorted)
	if !q.From.IsZero() {
		lo = sort.Search(len(s.sorted), func(i int) bool { return !time.Unix(s.sorted[i], 0).Before(q.From) })
	}
	if !q.To.IsZero() {
		hi = sort.Search(len(s.sorted), func(i int) bool { return !time.Unix(s.sorted[i], 0).Before(q.To) })
	}
	return s.sorted[lo:max(lo, hi)]
}

// Rollups implements metrics.Store. Its cost grows with the number of
// (API, hour) rollups in range and their callers, not with events.
func (s *Events) Rollups(ctx context.Context, q metrics.RollupQuery) ([]metrics.HourRollup, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := q.Validate(); err != nil {
		return nil, fmt.Errorf("memory: rollups: %w", err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []metrics.HourRollup
	for _, h := range s.hoursLocked(q) {
		apis := s.hours[h]
		start := len(out)
		for _, r := range apis {
			out = append(out, r.Clone())
		}
		part := out[start:]
		sort.Slice(part, func(a, b int) bool { return part[a].APIID < part[b].APIID })
	}
	return out, nil
}
