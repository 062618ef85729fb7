package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Sink receives usage events on the request path. Emit must not block and
// must be safe for concurrent use.
type Sink interface {
	Emit(UsageEvent)
}

// NopSink discards every event; it is the default when no sink is wired.
type NopSink struct{}

// Emit implements Sink.
func (NopSink) Emit(UsageEvent) {}

// AsyncSinkConfig configures an AsyncSink. Zero values are the defaults.
type AsyncSinkConfig struct {
	// Buffer is the number of events queued between Emit and the writer.
	// Default 8192.
	Buffer int
	// BatchSize is the most events written in one Store.Append. Default
	// 256.
	BatchSize int
	// WriteTimeout bounds each Append. Default 5s.
	WriteTimeout time.Duration
	// Linger is how long the writer waits, after an event arrives, for
	// more to fill the batch before it appends (a batch that fills up is
	// written at once). Fewer, larger appends cost a store far less per
	// event (one transaction, one rollup update per API and hour); events
	// reach analytics at most Linger later. Default 50ms; negative: none.
	Linger time.Duration
	// WarnInterval is the least time between two "events dropped" warnings.
	// Default 10s.
	WarnInterval time.Duration
	// Logger receives warnings; nil discards them.
	Logger *slog.Logger
	// Now stamps events that carry no time. Default time.Now.
	Now func() time.Time
}

// SinkStats are an AsyncSink's counters. Every emitted event ends up in
// exactly one of Written, Dropped, Invalid or Failed once the sink is
// closed.
type SinkStats struct {
	Emitted uint64 // Emit calls
	Written uint64 // events handed to a successful Append
	Dropped uint64 // buffer full, or emitted after Close
	Invalid uint64 // rejected by NormalizeUsageEvent
	Failed  uint64 // in a batch whose Append failed
}

// AsyncSink is a Sink that queues events in a bounded buffer and appends
// them to a Store in batches from one background goroutine, so the request
// path never waits for storage. When the buffer is full the event is
// dropped, counted, and a warning is logged at most once per WarnInterval.
type AsyncSink struct {
	store Store
	cfg   AsyncSinkConfig
	log   *slog.Logger
	ch    chan UsageEvent

	mu     sync.RWMutex // guards closed against concurrent Emit
	closed bool
	stop   chan struct{}
	done   chan struct{}

	emitted, written, dropped, invalid, failed atomic.Uint64
	lastWarn                                   atomic.Int64 // unix nanos
	droppedAtWarn                              atomic.Uint64
}

var _ Sink = (*AsyncSink)(nil)

// NewAsyncSink starts an AsyncSink writing to store. Call Close to flush and
// stop it.
func NewAsyncSink(store Store, cfg AsyncSinkConfig) (*AsyncSink, error) {
	if store == nil {
		return nil, errors.New("metrics: NewAsyncSink: nil store")
	}
	if cfg.Buffer == 0 {
		cfg.Buffer = 8192
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 1024
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	if cfg.Linger == 0 {
		cfg.Linger = 100 * time.Millisecond
	}
	if cfg.WarnInterval == 0 {
		cfg.WarnInterval = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Buffer < 0 || cfg.BatchSize < 0 || cfg.WriteTimeout < 0 || cfg.WarnInterval < 0 {
		return nil, fmt.Errorf("metrics: NewAsyncSink: negative config value")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &AsyncSink{
		store: store, cfg: cfg, log: log,
		ch:   make(chan UsageEvent, cfg.Buffer),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go s.run()
	return s, nil
}

// Emit queues e without blocking. An event without a time is stamped with
// the sink's clock; an invalid one is counted and discarded here, so it can
// never spoil a batch.
func (s *AsyncSink) Emit(e UsageEvent) {
	s.emitted.Add(1)
	if e.Time.IsZero() {
		e.Time = s.cfg.Now()
	}
	e, err := NormalizeUsageEvent(e)
	if err != nil {
		s.invalid.Add(1)
		s.warn("usage event rejected", slog.String("error", err.Error()))
		return
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		s.dropped.Add(1)
		return
	}
	select {
	case s.ch <- e:
	default:
		s.dropped.Add(1)
		s.warn("usage event buffer full, events dropped")
	}
}

// warn logs at most once per WarnInterval, with the drop count so far.
func (s *AsyncSink) warn(msg string, attrs ...slog.Attr) {
	now := s.cfg.Now().UnixNano()
	last := s.lastWarn.Load()
	if last != 0 && now-last < int64(s.cfg.WarnInterval) {
		return
	}
	if !s.lastWarn.CompareAndSwap(last, now) {
		return
	}
	d := s.dropped.Load()
	attrs = append(attrs,
		slog.Uint64("dropped_total", d),
		slog.Uint64("dropped_since_last_warning", d-s.droppedAtWarn.Swap(d)),
		slog.Uint64("invalid_total", s.invalid.Load()))
	s.log.LogAttrs(context.Background(), slog.LevelWarn, msg, attrs...)
}

// Dropped returns the number of events dropped because the buffer was full
// or the sink closed.
func (s *AsyncSink) Dropped() uint64 { return s.dropped.Load() }

// Stats returns the sink's counters.
func (s *AsyncSink) Stats() SinkStats {
	return SinkStats{
		Emitted: s.emitted.Load(), Written: s.written.Load(), Dropped: s.dropped.Load(),
		Invalid: s.invalid.Load(), Failed: s.failed.Load(),
	}
}

func (s *AsyncSink) run() {
	defer close(s.done)
	batch := make([]UsageEvent, 0, s.cfg.BatchSize)
	for {
		select {
		case e := <-s.ch:
			batch = append(batch[:0], e)
			// Take what arrives within Linger (or is already queued):
			// batches grow under load and a lone event waits at most
			// Linger.
			var deadline <-chan time.Time
			var timer *time.Timer
			if s.cfg.Linger > 0 {
				timer = time.NewTimer(s.cfg.Linger)
				deadline = timer.C
			}
		fill:
			for len(batch) < s.cfg.BatchSize {
				if deadline == nil {
					select {
					case e := <-s.ch:
						batch = append(batch, e)
					default:
						break fill
					}
					continue
				}
				select {
				case e := <-s.ch:
					batch = append(batch, e)
				case <-deadline:
					break fill
				case <-s.stop:
					break fill
				}
			}
			if timer != nil {
				timer.Stop()
			}
			s.write(batch)
		case <-s.stop:
			for {
				batch = batch[:0]
				for len(batch) < s.cfg.BatchSize && len(s.ch) > 0 {
					batch = append(batch, <-s.ch)
				}
				if len(batch) == 0 {
					return
				}
				s.write(batch)
			}
		}
	}
}

func (s *AsyncSink) write(batch []UsageEvent) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.WriteTimeout)
	defer cancel()
	if err := s.store.Append(ctx, batch...); err != nil {
		s.failed.Add(uint64(len(batch)))
		s.log.LogAttrs(ctx, slog.LevelError, "usage events not stored",
			slog.Int("events", len(batch)), slog.String("error", err.Error()))
		return
	}
	s.written.Add(uint64(len(batch)))
}

// Close stops accepting events, writes everything queued and waits for the
// writer, or returns ctx's error if ctx ends first (the writer then still
// finishes in the background). Close is idempotent.
func (s *AsyncSink) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.stop)
	}
	s.mu.Unlock()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
