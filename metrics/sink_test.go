package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/metrics/metricstest"
)

// fakeStore wraps a real store; AppendFn, when set, replaces Append to
// inject blocking or failures.
type fakeStore struct {
	metrics.Store
	AppendFn func(ctx context.Context, events ...metrics.UsageEvent) error
}

func (f *fakeStore) Append(ctx context.Context, events ...metrics.UsageEvent) error {
	if f.AppendFn != nil {
		return f.AppendFn(ctx, events...)
	}
	return f.Store.Append(ctx, events...)
}

// countingHandler counts log records by level.
type countingHandler struct {
	warns, errs atomic.Int64
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	switch r.Level {
	case slog.LevelWarn:
		h.warns.Add(1)
	case slog.LevelError:
		h.errs.Add(1)
	}
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

func ev(i int) metrics.UsageEvent {
	return metricstest.Event(fmt.Sprintf("s%d", i), "api", fmt.Sprintf("c%d", i%7), now, metrics.LifecyclePaymentSettled, "0.001", 5)
}

func TestAsyncSinkWritesEverythingOnClose(t *testing.T) {
	t.Parallel()
	store := newStore(t)
	var batches atomic.Int64
	var maxBatch atomic.Int64
	fake := &fakeStore{Store: store}
	fake.AppendFn = func(ctx context.Context, events ...metrics.UsageEvent) error {
		batches.Add(1)
		for {
			m := maxBatch.Load()
			if int64(len(events)) <= m || maxBatch.CompareAndSwap(m, int64(len(events))) {
				break
			}
		}
		return store.Append(ctx, events...)
	}
	sink, err := metrics.NewAsyncSink(fake, metrics.AsyncSinkConfig{Buffer: 100_000, BatchSize: 64})
	require.NoError(t, err)

	const goroutines, each = 16, 500
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				sink.Emit(ev(g*each + i))
			}
		}()
	}
	wg.Wait()
	require.NoError(t, sink.Close(context.Background()))
	require.NoError(t, sink.Close(context.Background()), "Close is idempotent")

	st := sink.Stats()
	require.Equal(t, metrics.SinkStats{Emitted: goroutines * each, Written: goroutines * each}, st)
	require.Zero(t, sink.Dropped())
	require.LessOrEqual(t, maxBatch.Load(), int64(64))
	rs, err := store.Rollups(context.Background(), metrics.RollupQuery{})
	require.NoError(t, err)
	require.EqualValues(t, goroutines*each, rs[0].Calls)
	require.EqualValues(t, goroutines*each*1000, rs[0].RevenueMicros)

	sink.Emit(ev(-1))
	require.EqualValues(t, 1, sink.Dropped(), "an event emitted after Close is dropped")
}

func TestAsyncSinkNeverBlocksAndCountsDrops(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	var written atomic.Int64
	fake := &fakeStore{AppendFn: func(_ context.Context, events ...metrics.UsageEvent) error {
		select {
		case started <- struct{}{}:
		default:
		}
		<-release // the store hangs
		written.Add(int64(len(events)))
		return nil
	}}
	logs := &countingHandler{}
	clock := now
	var clockMu sync.Mutex
	sink, err := metrics.NewAsyncSink(fake, metrics.AsyncSinkConfig{
		Buffer: 10, BatchSize: 1, Logger: slog.New(logs), WarnInterval: time.Minute,
		Now: func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return clock },
	})
	require.NoError(t, err)

	sink.Emit(ev(0))
	<-started // the writer holds event 0 inside Append; the buffer is empty
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= 1000; i++ {
			sink.Emit(ev(i))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Emit blocked on a hung store")
	}
	require.EqualValues(t, 1000-10, sink.Dropped())
	require.EqualValues(t, 1, logs.warns.Load(), "drop warnings are rate limited")

	clockMu.Lock()
	clock = clock.Add(time.Minute)
	clockMu.Unlock()
	sink.Emit(ev(2000))
	require.EqualValues(t, 2, logs.warns.Load(), "one more warning after the interval")

	close(release)
	require.NoError(t, sink.Close(context.Background()))
	st := sink.Stats()
	require.EqualValues(t, 1002, st.Emitted)
	require.EqualValues(t, 11, st.Written)
	require.EqualValues(t, 991, st.Dropped)
	require.EqualValues(t, 11, written.Load())
	require.Equal(t, st.Emitted, st.Written+st.Dropped+st.Invalid+st.Failed)
}

func TestAsyncSinkInvalidAndFailed(t *testing.T) {
	t.Parallel()
	logs := &countingHandler{}
	fail := errors.New("disk full")
	fake := &fakeStore{AppendFn: func(context.Context, ...metrics.UsageEvent) error { return fail }}
	sink, err := metrics.NewAsyncSink(fake, metrics.AsyncSinkConfig{Logger: slog.New(logs), Now: func() time.Time { return now }})
	require.NoError(t, err)
	bad := ev(1)
	bad.RequestID = ""
	sink.Emit(bad)
	untimed := ev(2)
	untimed.Time = time.Time{} // stamped by the sink's clock
	sink.Emit(untimed)
	require.NoError(t, sink.Close(context.Background()))
	st := sink.Stats()
	require.Equal(t, metrics.SinkStats{Emitted: 2, Invalid: 1, Failed: 1}, st)
	require.EqualValues(t, 1, logs.errs.Load())
	require.EqualValues(t, 1, logs.warns.Load())
}

func TestAsyncSinkCloseHonoursContext(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	fake := &fakeStore{AppendFn: func(context.Context, ...metrics.UsageEvent) error { <-release; return nil }}
	sink, err := metrics.NewAsyncSink(fake, metrics.AsyncSinkConfig{})
	require.NoError(t, err)
	sink.Emit(ev(1))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, sink.Close(ctx), context.DeadlineExceeded)
	close(release)
	require.NoError(t, sink.Close(context.Background()))
}

func TestNewAsyncSinkValidation(t *testing.T) {
	t.Parallel()
	_, err := metrics.NewAsyncSink(nil, metrics.AsyncSinkConfig{})
	require.Error(t, err)
	_, err = metrics.NewAsyncSink(newStore(t), metrics.AsyncSinkConfig{Buffer: -1})
	require.Error(t, err)
	var s metrics.Sink = metrics.NopSink{}
	s.Emit(ev(1))
}

// Events that arrive within Linger of each other are appended together:
// one store call for a burst, not one per event; a lone event is written
// after at most Linger.
func TestAsyncSinkLingersToBatch(t *testing.T) {
	t.Parallel()
	store := newStore(t)
	var calls, events atomic.Int64
	fake := &fakeStore{Store: store, AppendFn: func(ctx context.Context, es ...metrics.UsageEvent) error {
		calls.Add(1)
		events.Add(int64(len(es)))
		return store.Append(ctx, es...)
	}}
	s, err := metrics.NewAsyncSink(fake, metrics.AsyncSinkConfig{Linger: 200 * time.Millisecond})
	require.NoError(t, err)
	for i := 0; i < 50; i++ {
		s.Emit(ev(i))
	}
	require.Eventually(t, func() bool { return events.Load() == 50 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, int64(1), calls.Load(), "a burst within Linger is one append")
	start := time.Now()
	s.Emit(ev(99))
	require.Eventually(t, func() bool { return events.Load() == 51 }, 5*time.Second, 5*time.Millisecond)
	require.Less(t, time.Since(start), 3*time.Second, "a lone event waits about Linger, not for company")
	require.NoError(t, s.Close(context.Background()))
}
