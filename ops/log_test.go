package ops_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/ops"
)

// recordHandler is a slog handler that keeps every record at or above its
// level, with its attributes flattened.
type recordHandler struct {
	level slog.Level
	mu    sync.Mutex
	recs  []logRecord
}

type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]slog.Value
}

func (h *recordHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{level: r.Level, msg: r.Message, attrs: map[string]slog.Value{}}
	r.Attrs(func(a slog.Attr) bool { rec.attrs[a.Key] = a.Value; return true })
	h.mu.Lock()
	h.recs = append(h.recs, rec)
	h.mu.Unlock()
	return nil
}

func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordHandler) records() []logRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]logRecord(nil), h.recs...)
}

func TestLogSinkOneLinePerRequest(t *testing.T) {
	t.Parallel()
	h := &recordHandler{level: slog.LevelDebug}
	var calls int64
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { calls++; return base.Add(time.Duration(calls) * 20 * time.Millisecond) }
	d := newObsDispatcher(t, dispatch.Config{Events: ops.LogSink(slog.New(h)), Stages: []dispatch.Stage{refuseStage}, Now: now})

	ok := serve(d, "GET", "http://gw/t/alpha/")
	fail := serve(d, "GET", "http://gw/t/beta/")
	refused := serve(d, "GET", "http://gw/t/alpha/", "X-Refuse", "1")
	serve(d, "GET", "http://gw/t/nobody/") // no tenant: no event, no line
	recs := h.records()
	require.Len(t, recs, 3)

	r := recs[0]
	require.Equal(t, slog.LevelDebug, r.level)
	require.Equal(t, "request", r.msg)
	require.Equal(t, ok.Header().Get("X-Request-Id"), r.attrs["requestId"].String())
	require.Equal(t, "alpha", r.attrs["tenant"].String())
	require.Equal(t, "served", r.attrs["lifecycle"].String())
	require.Equal(t, int64(200), r.attrs["status"].Int64())
	require.Equal(t, 20*time.Millisecond, r.attrs["duration"].Duration())
	require.Equal(t, "w-alpha", r.attrs["worker"].String())
	require.NotContains(t, r.attrs, "code")

	r = recs[1] // a 5xx from the worker
	require.Equal(t, slog.LevelWarn, r.level)
	require.Equal(t, "request failed", r.msg)
	require.Equal(t, fail.Header().Get("X-Request-Id"), r.attrs["requestId"].String())
	require.Equal(t, "beta", r.attrs["tenant"].String())
	require.Equal(t, "worker_error", r.attrs["lifecycle"].String())
	require.Equal(t, int64(500), r.attrs["status"].Int64())

	r = recs[2] // an error code the gateway answered
	require.Equal(t, slog.LevelWarn, r.level)
	require.Equal(t, refused.Header().Get("X-Request-Id"), r.attrs["requestId"].String())
	require.Equal(t, "rate_limited", r.attrs["lifecycle"].String())
	require.Equal(t, "rate_limited", r.attrs["code"].String())
	require.Equal(t, int64(429), r.attrs["status"].Int64())
}

// At info level only failures are logged; a nil logger logs nothing.
func TestLogSinkLevels(t *testing.T) {
	t.Parallel()
	h := &recordHandler{level: slog.LevelInfo}
	d := newObsDispatcher(t, dispatch.Config{Events: ops.LogSink(slog.New(h))})
	for i := 0; i < 5; i++ {
		serve(d, "GET", "http://gw/t/alpha/")
	}
	serve(d, "GET", "http://gw/t/beta/")
	recs := h.records()
	require.Len(t, recs, 1)
	require.Equal(t, "beta", recs[0].attrs["tenant"].String())

	nilSink := ops.LogSink(nil)
	nilSink.Emit(dispatch.Event{Type: dispatch.EventFailure, Status: 500}) // does not panic
}

// Under TraceHandler a line carries the request's trace id.
func TestLogSinkCarriesTraceID(t *testing.T) {
	t.Parallel()
	tr, _ := newTestTracing(t)
	h := &recordHandler{level: slog.LevelDebug}
	d := newObsDispatcher(t, dispatch.Config{Events: ops.LogSink(slog.New(h))})
	serve(ops.TraceHandler(tr, d), "GET", "http://gw/t/alpha/", "Traceparent", incomingTP)
	recs := h.records()
	require.Len(t, recs, 1)
	require.Equal(t, incomingTrace, recs[0].attrs["traceId"].String())
}

// Many goroutines: exactly one line per request.
func TestLogSinkConcurrent(t *testing.T) {
	t.Parallel()
	h := &recordHandler{level: slog.LevelDebug}
	d := newObsDispatcher(t, dispatch.Config{Events: ops.LogSink(slog.New(h))})
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				serve(d, "GET", "http://gw/t/alpha/")
			}
		}()
	}
	wg.Wait()
	recs := h.records()
	require.Len(t, recs, 400)
	ids := map[string]bool{}
	for _, r := range recs {
		ids[r.attrs["requestId"].String()] = true
	}
	require.Len(t, ids, 400)
}
