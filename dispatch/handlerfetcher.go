package dispatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
)

// HandlerFetcher is a Fetcher that runs workers in process: each worker is
// an http.Handler, called with the request's context (deadline and
// subrequest Budget; see OutboundClient). The worker's answer is buffered,
// so a worker that goes over its subrequest limit is answered with
// ErrWorkerLimitExceeded instead of whatever it wrote, and one that outlives
// its wall-clock budget with ErrWorkerTimeout. A panicking worker is
// ErrWorkerFailure.
//
// It serves the example server's demo workers and tests of tenant logic.
type HandlerFetcher struct {
	mu       sync.RWMutex
	handlers map[string]http.Handler
}

var _ Fetcher = (*HandlerFetcher)(nil)

// NewHandlerFetcher returns a fetcher serving the given workers by name.
func NewHandlerFetcher(workers map[string]http.Handler) *HandlerFetcher {
	f := &HandlerFetcher{handlers: make(map[string]http.Handler, len(workers))}
	for k, v := range workers {
		f.handlers[k] = v
	}
	return f
}

// Set adds or replaces the worker called name.
func (f *HandlerFetcher) Set(name string, h http.Handler) {
	f.mu.Lock()
	f.handlers[name] = h
	f.mu.Unlock()
}

// Has reports whether a worker called name exists.
func (f *HandlerFetcher) Has(name string) bool {
	f.mu.RLock()
	_, ok := f.handlers[name]
	f.mu.RUnlock()
	return ok
}

// Fetch implements Fetcher.
func (f *HandlerFetcher) Fetch(ctx context.Context, req *http.Request, p *Payload) (*http.Response, error) {
	f.mu.RLock()
	h, ok := f.handlers[p.WorkerName]
	f.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: no worker named %q", ErrWorkerNotFound, p.WorkerName)
	}
	rec := newRecorder()
	done := make(chan any, 1)
	go func() {
		defer func() { done <- recover() }()
		h.ServeHTTP(rec, req.WithContext(ctx))
	}()
	select {
	case <-ctx.Done():
		// The handler goes on writing into its own recorder, which nobody
		// reads any more.
		if ctx.Err() == context.DeadlineExceeded {
			return nil, fmt.Errorf("%w: worker %q", ErrWorkerTimeout, p.WorkerName)
		}
		return nil, ctx.Err()
	case v := <-done:
		if v != nil {
			return nil, fmt.Errorf("%w: worker %q panicked: %v", ErrWorkerFailure, p.WorkerName, v)
		}
		// The worker may have stopped because the call ended: what it
		// wrote is then cut short, not an answer.
		if err := ctx.Err(); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return nil, fmt.Errorf("%w: worker %q", ErrWorkerTimeout, p.WorkerName)
			}
			return nil, err
		}
	}
	if b, ok := BudgetFrom(ctx); ok && b.Exceeded() {
		return nil, fmt.Errorf("%w: worker %q tried more than %d subrequests", ErrWorkerLimitExceeded, p.WorkerName, p.Limits.SubRequests)
	}
	return rec.response(), nil
}

// recorder is a minimal buffering http.ResponseWriter.
type recorder struct {
	header      http.Header
	status      int
	body        bytes.Buffer
	wroteHeader bool
}

func newRecorder() *recorder { return &recorder{header: make(http.Header)} }

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.wroteHeader {
		return
	}
	r.wroteHeader = true
	r.status = status
}

func (r *recorder) Write(p []byte) (int, error) {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	return r.body.Write(p)
}

func (r *recorder) response() *http.Response {
	if !r.wroteHeader {
		r.status = http.StatusOK
	}
	h := r.header.Clone()
	b := r.body.Bytes()
	if h.Get("Content-Type") == "" && len(b) > 0 {
		h.Set("Content-Type", http.DetectContentType(b))
	}
	h.Set("Content-Length", strconv.Itoa(len(b)))
	return newResponse(r.status, h, b)
}
