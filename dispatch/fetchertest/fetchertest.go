// Package fetchertest is the conformance suite of the dispatch.Fetcher port.
// Every fetcher runs it (the in-process HandlerFetcher, the HTTP upstream
// fetcher, the Cloudflare gateway-mode fetcher) through a Harness that
// stands up workers written as http.Handlers:
//
//	func TestConformance(t *testing.T) {
//		fetchertest.Run(t, fetchertest.Harness{
//			New: func(tb testing.TB, workers map[string]http.Handler) dispatch.Fetcher {
//				return dispatch.NewHandlerFetcher(workers)
//			},
//			CanLimit:  true,
//			OverLimit: overLimitWorker,
//		})
//	}
//
// The suite calls Fetch as the dispatcher does (a context with a deadline
// and a subrequest dispatch.Budget, the worker's path in the request URL and
// in the Payload) and checks, with errors.Is, the classification the Fetcher
// contract asks for: an unknown worker is dispatch.ErrWorkerNotFound, a
// worker past the deadline dispatch.ErrWorkerTimeout, a worker that fails or
// drops the connection dispatch.ErrWorkerFailure, a worker over its limits
// dispatch.ErrWorkerLimitExceeded, and a call its caller cancels
// context.Canceled or a failure (never a timeout, a missing worker or a
// limit); that an answer cut short by a deadline, a crash or a cancellation
// never passes as complete; that a worker's own status, redirects included,
// is its answer and is never followed; and that an answer (status, headers,
// streamed or buffered body) and a request (method, escaped path, query,
// body, headers) cross the fetcher intact, under concurrency too.
//
// Abilities an adapter may lack are declared in the Harness (CanLimit,
// Streams); the suite then checks what the adapter promises instead, or
// skips with the declaration as the reason, never silently.
package fetchertest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/limits"
)

// Harness tells the suite how to run workers behind one fetcher.
type Harness struct {
	// New returns a fetcher that serves each handler of workers under its
	// name and answers any other name with dispatch.ErrWorkerNotFound. It
	// is called once per subtest (and per benchmark); it releases what it
	// starts with tb.Cleanup.
	//
	// The suite's workers signal a crash by panicking, before or after
	// writing part of their answer. The harness makes that what a crash is
	// on its runtime: a recovered panic (in process), a dropped connection
	// (net/http does that for a panicking handler), or the error answer of
	// an emulated dispatch endpoint.
	New func(tb testing.TB, workers map[string]http.Handler) dispatch.Fetcher

	// CanLimit declares that the adapter can express a worker going over
	// its limits; OverLimit is then such a worker, breaching them the way
	// the adapter's runtime reports it (more subrequests than the Budget
	// in the request context allows, a 503 with X-Dispatch-Limit-Exceeded,
	// a CPU-limit exception). With CanLimit false the limit case is
	// skipped with that declaration as the reason.
	CanLimit  bool
	OverLimit http.Handler

	// Streams declares that the response body streams: Fetch returns once
	// the worker has sent its headers, before it has finished its body.
	// With Streams false the fetcher buffers, and the suite checks instead
	// that the answer it returns is complete (Content-Length matches).
	Streams bool
}

// Values the suite sends with every request.
const (
	// RequestID is the Payload's request id.
	RequestID = "6f1c2a4e-8d53-4c3b-9a53-2b8a1c0e7f11"
	// TenantID is the Payload's tenant.
	TenantID = "acme"
	// Host is the Host the client asked for.
	Host = "gw.example"
)

// Limits are the Payload's limits; the request context's Budget allows
// Limits.SubRequests subrequests.
var Limits = limits.Limits{CPUMs: 200, SubRequests: 5}

// slack bounds how long after its deadline or cancellation a call may take
// to return, and how long a worker may take to see it: generous, so a
// loaded machine does not fail the suite, yet far below "hangs".
const slack = 5 * time.Second

// Run runs the whole suite, each case on a fresh fetcher.
func Run(t *testing.T, h Harness) {
	t.Helper()
	require.NotNil(t, h.New, "fetchertest: Harness.New is required")
	require.Equal(t, h.CanLimit, h.OverLimit != nil, "fetchertest: Harness.OverLimit must be set exactly when CanLimit is")
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"Answer", testAnswer},
		{"StatusPassesThrough", testStatusPassesThrough},
		{"RedirectPassesThrough", testRedirectPassesThrough},
		{"RequestPassesThrough", testRequestPassesThrough},
		{"UnknownWorker", testUnknownWorker},
		{"Timeout", testTimeout},
		{"StallMidBody", testStallMidBody},
		{"Failure", testFailure},
		{"FailureMidBody", testFailureMidBody},
		{"OverLimit", testOverLimit},
		{"Cancel", testCancel},
		{"WorkerStopsAtCancel", testWorkerStopsAtCancel},
		{"LargeResponseBody", testLargeResponseBody},
		{"LargeRequestBody", testLargeRequestBody},
		{"Streaming", testStreaming},
		{"Concurrent", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, h) })
	}
}

// call is one request the suite sends through a fetcher.
type call struct {
	worker string
	method string
	path   string // escaped, as the worker sees it
	query  string
	body   []byte
	header http.Header
}

// newRequest builds the request and payload the dispatcher would hand the
// fetcher: a server-side request (RemoteAddr set, RequestURI cleared) with
// the worker's path, ctx carrying a Budget of Limits.SubRequests.
func (c call) newRequest(ctx context.Context) (*http.Request, *dispatch.Payload) {
	if c.method == "" {
		c.method = http.MethodGet
	}
	if c.path == "" {
		c.path = "/"
	}
	target := "http://" + Host + c.path
	if c.query != "" {
		target += "?" + c.query
	}
	var body io.Reader
	if c.body != nil {
		body = bytes.NewReader(c.body)
	}
	ctx = dispatch.WithBudget(ctx, dispatch.NewBudget(Limits.SubRequests))
	req := httptest.NewRequestWithContext(ctx, c.method, target, body)
	req.RequestURI = ""
	for k, vs := range c.header {
		req.Header[k] = append([]string(nil), vs...)
	}
	p := &dispatch.Payload{
		RequestID:  RequestID,
		TenantID:   TenantID,
		WorkerName: c.worker,
		Plan:       "pro",
		Limits:     Limits,
		Method:     c.method,
		Host:       Host,
		Path:       c.path,
		Query:      c.query,
	}
	return req, p
}

// fetch calls f with ctx as the request's context and Fetch's.
func fetch(ctx context.Context, f dispatch.Fetcher, c call) (*http.Response, error) {
	req, p := c.newRequest(ctx)
	return f.Fetch(req.Context(), req, p)
}

// defaultCtx is the context of calls that are not about deadlines: one
// with a deadline, as the dispatcher always gives.
func defaultCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// readAll reads and closes resp's body.
func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	return b
}

// requireClassified checks that err wraps want, that dispatch.StatusOf
// maps it to want's status, and that no response came with it.
func requireClassified(t *testing.T, resp *http.Response, err error, want *dispatch.Error) {
	t.Helper()
	if resp != nil {
		resp.Body.Close()
	}
	require.Nil(t, resp, "an error comes without a response")
	require.ErrorIs(t, err, want)
	status, code := dispatch.StatusOf(err)
	require.Equal(t, want.Status(), status, "StatusOf(%v)", err)
	require.Equal(t, want.Code, code)
}

// flush pushes what a worker wrote so far to the client, where the
// runtime can (an in-process recorder cannot, and need not).
func flush(w http.ResponseWriter) { _ = http.NewResponseController(w).Flush() }

// gate is a worker's wait: it ends when the request context ends (which
// is recorded), when the test releases it, or after a long bound so that a
// broken fetcher cannot wedge the test binary.
type gate struct {
	started  chan struct{}
	canceled chan struct{}
	release  chan struct{}
	once     sync.Once
	cancel   sync.Once
	rel      sync.Once
}

func newGate() *gate {
	return &gate{started: make(chan struct{}), canceled: make(chan struct{}), release: make(chan struct{})}
}

// wait blocks the worker; it reports whether the request context ended.
func (g *gate) wait(r *http.Request) bool {
	g.once.Do(func() { close(g.started) })
	select {
	case <-r.Context().Done():
		// A transport may retry a request, so a gate can be waited on
		// more than once.
		g.cancel.Do(func() { close(g.canceled) })
		return true
	case <-g.release:
	case <-time.After(time.Minute):
	}
	return false
}

func (g *gate) open() { g.rel.Do(func() { close(g.release) }) }

// requireCanceled waits for the worker to see its request context end.
func (g *gate) requireCanceled(t *testing.T, what string) {
	t.Helper()
	select {
	case <-g.canceled:
	case <-time.After(slack):
		t.Fatalf("the worker's request context did not end within %s of %s: its work would run on unbounded", slack, what)
	}
}

// newFetcher builds a fetcher and, after it (so that the release runs
// before the harness's own cleanup, which may wait for handlers), releases
// the gates the test's workers may still be waiting on.
func newFetcher(t *testing.T, h Harness, workers map[string]http.Handler, gates ...*gate) dispatch.Fetcher {
	t.Helper()
	f := h.New(t, workers)
	require.NotNil(t, f)
	t.Cleanup(func() {
		for _, g := range gates {
			g.open()
		}
	})
	return f
}

func testAnswer(t *testing.T, h Harness) {
	var hits atomic.Int64
	f := newFetcher(t, h, map[string]http.Handler{
		"w-answer": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header()["X-Answer"] = []string{"one", "two"}
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, "hello from the worker\n")
		}),
	})
	c := call{worker: "w-answer", path: "/hello", header: http.Header{"X-Custom": {"kept"}}}
	req, p := c.newRequest(defaultCtx(t))
	reqBefore, headerBefore := req.URL.String(), req.Header.Clone()
	resp, err := f.Fetch(req.Context(), req, p)
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	require.Equal(t, []string{"one", "two"}, resp.Header.Values("X-Answer"), "repeated headers keep every value, in order")
	require.Equal(t, "text/plain; charset=utf-8", resp.Header.Get("Content-Type"))
	require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	require.Equal(t, "hello from the worker\n", string(readAll(t, resp)))
	require.Equal(t, int64(1), hits.Load(), "the worker is called exactly once")
	require.Equal(t, reqBefore, req.URL.String(), "the caller's request URL is not changed")
	require.Equal(t, headerBefore, req.Header, "the caller's request headers are not changed")
}

// testStatusPassesThrough: whatever status the worker answers, its own
// 404, 500 or 503 included, is its answer and not a gateway error.
func testStatusPassesThrough(t *testing.T, h Harness) {
	f := newFetcher(t, h, map[string]http.Handler{
		"w-status": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			code, _ := strconv.Atoi(r.URL.Query().Get("code"))
			w.Header().Set("X-Status", strconv.Itoa(code))
			w.WriteHeader(code)
			if code != http.StatusNoContent && code != http.StatusNotModified {
				_, _ = fmt.Fprintf(w, "worker says %d", code)
			}
		}),
	})
	ctx := defaultCtx(t)
	for _, code := range []int{200, 202, 204, 301, 400, 401, 402, 404, 409, 429, 500, 502, 503, 504} {
		resp, err := fetch(ctx, f, call{worker: "w-status", path: "/s", query: "code=" + strconv.Itoa(code)})
		require.NoError(t, err, "status %d is the worker's answer, not an error", code)
		require.Equal(t, code, resp.StatusCode)
		require.Equal(t, strconv.Itoa(code), resp.Header.Get("X-Status"))
		body := readAll(t, resp)
		if code == http.StatusNoContent {
			require.Empty(t, body)
		} else {
			require.Equal(t, fmt.Sprintf("worker says %d", code), string(body))
		}
	}
}

// testRedirectPassesThrough: a worker's redirect is its answer to the
// client. The fetcher never follows it: following would send the client's
// request (its body, its headers) to wherever the worker points, and
// answer with someone else's response.
func testRedirectPassesThrough(t *testing.T, h Harness) {
	var elsewhere atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		_, _ = io.WriteString(w, "followed")
	}))
	t.Cleanup(target.Close)
	var hits atomic.Int64
	f := newFetcher(t, h, map[string]http.Handler{
		"w-redirect": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			code, _ := strconv.Atoi(r.URL.Query().Get("code"))
			loc := target.URL + "/moved"
			if r.URL.Query().Get("relative") != "" {
				loc = "/moved-here"
			}
			w.Header().Set("Location", loc)
			w.WriteHeader(code)
			_, _ = io.WriteString(w, "see elsewhere")
		}),
	})
	ctx := defaultCtx(t)
	n := 0
	for _, code := range []int{301, 302, 303, 307, 308} {
		for _, relative := range []bool{false, true} {
			q := "code=" + strconv.Itoa(code)
			want := target.URL + "/moved"
			if relative {
				q += "&relative=1"
				want = "/moved-here"
			}
			resp, err := fetch(ctx, f, call{worker: "w-redirect", method: http.MethodPost, path: "/r", query: q, body: []byte("pay")})
			n++
			require.NoError(t, err, "%d", code)
			require.Equal(t, code, resp.StatusCode, "the worker's %d reaches the client, not followed", code)
			require.Equal(t, want, resp.Header.Get("Location"))
			require.Equal(t, "see elsewhere", string(readAll(t, resp)))
		}
	}
	require.Equal(t, int64(n), hits.Load(), "the worker is called once per request, never again through its own redirect")
	require.Zero(t, elsewhere.Load(), "a redirect target is never called by the fetcher")
}

// seenRequest is what a worker received.
type seenRequest struct {
	method, path, query string
	body                []byte
	header              http.Header
}

func testRequestPassesThrough(t *testing.T, h Harness) {
	seen := make(chan seenRequest, 1)
	f := newFetcher(t, h, map[string]http.Handler{
		"w-echo": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			seen <- seenRequest{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, b, r.Header.Clone()}
			w.WriteHeader(http.StatusNoContent)
		}),
	})
	binary := make([]byte, 1000)
	for i := range binary {
		binary[i] = byte(i)
	}
	cases := []call{
		{method: http.MethodGet, path: "/v1/items", query: "country=FR&country=DE&q=a%20b&amp=%26&empty="},
		{method: http.MethodPost, path: "/v1/items/a%2Fb/caf%C3%A9", body: binary},
		{method: http.MethodPut, path: "/v1/items/42", query: "dry=1", body: []byte(`{"name":"x"}`)},
		{method: http.MethodPatch, path: "/v1/items/42", body: []byte("patch")},
		{method: http.MethodDelete, path: "/v1/items/42"},
		{method: http.MethodGet, path: "/"},
		{method: http.MethodPost, path: "/v1/empty", body: []byte{}},
	}
	ctx := defaultCtx(t)
	for _, c := range cases {
		name := c.method + " " + c.path + "?" + c.query
		c.worker = "w-echo"
		c.header = http.Header{
			"X-Custom":     {"a", "b"},
			"Accept":       {"text/csv"},
			"Content-Type": {"application/octet-stream"},
		}
		resp, err := fetch(ctx, f, c)
		require.NoError(t, err, name)
		require.Equal(t, http.StatusNoContent, resp.StatusCode, name)
		readAll(t, resp)
		var got seenRequest
		select {
		case got = <-seen:
		default:
			t.Fatalf("%s: the worker was not called", name)
		}
		require.Equal(t, c.method, got.method, name)
		require.Equal(t, c.path, got.path, "%s: the escaped path reaches the worker as sent", name)
		require.Equal(t, c.query, got.query, "%s: the query reaches the worker as sent", name)
		require.Equal(t, len(c.body), len(got.body), name)
		if len(c.body) > 0 {
			require.Equal(t, c.body, got.body, name)
		}
		require.Equal(t, []string{"a", "b"}, got.header.Values("X-Custom"), name)
		require.Equal(t, "text/csv", got.header.Get("Accept"), name)
		require.Equal(t, "application/octet-stream", got.header.Get("Content-Type"), name)
	}
}

func testUnknownWorker(t *testing.T, h Harness) {
	var hits atomic.Int64
	f := newFetcher(t, h, map[string]http.Handler{
		"w-known": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }),
	})
	for _, name := range []string{"w-missing", "w-known-but-longer", "W-KNOWN"} {
		resp, err := fetch(defaultCtx(t), f, call{worker: name, path: "/"})
		requireClassified(t, resp, err, dispatch.ErrWorkerNotFound)
	}
	require.Zero(t, hits.Load(), "no other worker answers for a missing one")
}

// testTimeout: a worker that answers nothing within the deadline is
// ErrWorkerTimeout, the call returns soon after the deadline, and the
// worker's request context ends.
func testTimeout(t *testing.T, h Harness) {
	g := newGate()
	f := newFetcher(t, h, map[string]http.Handler{
		"w-hang": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !g.wait(r) {
				_, _ = io.WriteString(w, "too late")
			}
		}),
	}, g)
	const deadline = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	start := time.Now()
	resp, err := fetch(ctx, f, call{worker: "w-hang", path: "/slow"})
	took := time.Since(start)
	requireClassified(t, resp, err, dispatch.ErrWorkerTimeout)
	require.Less(t, took, deadline+slack, "the call ends at its deadline")
	g.requireCanceled(t, "the deadline")
}

// testStallMidBody: a worker that sends part of its answer and then stalls
// past the deadline never yields a complete-looking answer: either Fetch
// is ErrWorkerTimeout (a buffering fetcher), or the body read fails.
func testStallMidBody(t *testing.T, h Harness) {
	g := newGate()
	f := newFetcher(t, h, map[string]http.Handler{
		"w-stall": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "partial")
			flush(w)
			if !g.wait(r) {
				_, _ = io.WriteString(w, " and the rest")
			}
		}),
	}, g)
	const deadline = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	start := time.Now()
	resp, err := fetch(ctx, f, call{worker: "w-stall", path: "/"})
	if err != nil {
		requireClassified(t, resp, err, dispatch.ErrWorkerTimeout)
	} else {
		require.Equal(t, http.StatusOK, resp.StatusCode)
		b, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Error(t, rerr, "a body cut off by the deadline must not read as complete (got %q)", b)
		require.True(t, strings.HasPrefix("partial", string(b)), "only what the worker sent before stalling, got %q", b)
	}
	require.Less(t, time.Since(start), deadline+slack)
	g.requireCanceled(t, "the deadline")
}

// crash is what the suite's workers do to fail.
func crash() { panic(http.ErrAbortHandler) }

func testFailure(t *testing.T, h Harness) {
	f := newFetcher(t, h, map[string]http.Handler{
		"w-crash": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { crash() }),
	})
	resp, err := fetch(defaultCtx(t), f, call{worker: "w-crash", path: "/"})
	requireClassified(t, resp, err, dispatch.ErrWorkerFailure)
	// The fetcher is still usable after a worker's failure.
	resp, err = fetch(defaultCtx(t), f, call{worker: "w-crash", path: "/"})
	requireClassified(t, resp, err, dispatch.ErrWorkerFailure)
}

// testFailureMidBody: a worker that crashes after sending part of its
// answer never yields a complete-looking answer.
func testFailureMidBody(t *testing.T, h Harness) {
	f := newFetcher(t, h, map[string]http.Handler{
		"w-crash-late": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, strings.Repeat("x", 8<<10))
			flush(w)
			crash()
		}),
	})
	resp, err := fetch(defaultCtx(t), f, call{worker: "w-crash-late", path: "/"})
	if err != nil {
		requireClassified(t, resp, err, dispatch.ErrWorkerFailure)
		return
	}
	b, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Error(t, rerr, "a body cut off by a crash must not read as complete (read %d bytes)", len(b))
}

func testOverLimit(t *testing.T, h Harness) {
	if !h.CanLimit {
		t.Skip("the harness declares CanLimit false: this adapter cannot express a worker over its limits")
	}
	var ok atomic.Int64
	f := newFetcher(t, h, map[string]http.Handler{
		"w-greedy": h.OverLimit,
		"w-ok":     http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ok.Add(1) }),
	})
	resp, err := fetch(defaultCtx(t), f, call{worker: "w-greedy", path: "/"})
	requireClassified(t, resp, err, dispatch.ErrWorkerLimitExceeded)
	// One worker's breach is not another's.
	resp, err = fetch(defaultCtx(t), f, call{worker: "w-ok", path: "/"})
	require.NoError(t, err)
	readAll(t, resp)
	require.Equal(t, int64(1), ok.Load())
}

// testCancel: a caller that goes away (context canceled, not timed out)
// ends the call promptly; the error is not a timeout, a missing worker or
// a limit, and the worker's request context ends.
func testCancel(t *testing.T, h Harness) {
	g := newGate()
	f := newFetcher(t, h, map[string]http.Handler{
		"w-hang": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !g.wait(r) {
				_, _ = io.WriteString(w, "too late")
			}
		}),
	}, g)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	go func() {
		select {
		case <-g.started:
		case <-time.After(slack):
		}
		cancel()
	}()
	start := time.Now()
	resp, err := fetch(ctx, f, call{worker: "w-hang", path: "/"})
	if resp != nil {
		resp.Body.Close()
	}
	require.Nil(t, resp)
	require.Error(t, err)
	require.True(t, errors.Is(err, context.Canceled) || errors.Is(err, dispatch.ErrWorkerFailure),
		"a canceled call is context.Canceled or ErrWorkerFailure, got %v", err)
	for _, wrong := range []error{dispatch.ErrWorkerTimeout, dispatch.ErrWorkerNotFound, dispatch.ErrWorkerLimitExceeded} {
		require.NotErrorIs(t, err, wrong)
	}
	require.Less(t, time.Since(start), 2*slack)
	g.requireCanceled(t, "the cancellation")
}

// testWorkerStopsAtCancel: a worker that stops as soon as its context ends
// leaves an answer cut short (here, empty), which the fetcher must not
// hand on as the worker's answer. The call's context ends while the worker
// runs, and the worker returns at once; whichever the fetcher notices
// first, the call is an error. The race is re-run many times because a
// fetcher gets it wrong only when the worker wins it.
func testWorkerStopsAtCancel(t *testing.T, h Harness) {
	var cancels sync.Map // call id -> context.CancelFunc
	f := newFetcher(t, h, map[string]http.Handler{
		"w-polite": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := r.URL.Query().Get("id")
			if c, ok := cancels.Load(id); ok {
				c.(context.CancelFunc)()
			}
			select {
			case <-r.Context().Done():
				return // stops short, as a well-behaved worker does
			case <-time.After(slack):
				_, _ = io.WriteString(w, "the context never ended")
			}
		}),
	})
	const rounds = 500
	for i := range rounds {
		id := strconv.Itoa(i)
		ctx, cancel := context.WithCancel(t.Context())
		cancels.Store(id, cancel)
		resp, err := fetch(ctx, f, call{worker: "w-polite", path: "/", query: "id=" + id})
		cancel()
		if resp != nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.Error(t, err, "round %d: the fetcher returned %d %q from a worker whose call was canceled mid-way: an answer cut short passes as complete (check ctx.Err() once the worker returns)", i, resp.StatusCode, b)
		}
		require.Error(t, err, "round %d", i)
		require.True(t, errors.Is(err, context.Canceled) || errors.Is(err, dispatch.ErrWorkerFailure), "round %d: %v", i, err)
	}
}

// pattern is a deterministic byte stream of n bytes.
type pattern struct{ off, n int64 }

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if rem := p.n - p.off; int64(len(b)) > rem {
		b = b[:rem]
	}
	for i := range b {
		v := p.off + int64(i)
		b[i] = byte(v*7 + v>>11)
	}
	p.off += int64(len(b))
	return len(b), nil
}

func patternSum(n int64) [32]byte {
	h := sha256.New()
	_, _ = io.Copy(h, &pattern{n: n})
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

const largeBody = 8 << 20

func testLargeResponseBody(t *testing.T, h Harness) {
	f := newFetcher(t, h, map[string]http.Handler{
		"w-big": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/octet-stream")
			buf := make([]byte, 32<<10)
			_, _ = io.CopyBuffer(w, &pattern{n: largeBody}, buf)
		}),
	})
	resp, err := fetch(defaultCtx(t), f, call{worker: "w-big", path: "/big"})
	require.NoError(t, err)
	defer resp.Body.Close()
	hash := sha256.New()
	n, err := io.Copy(hash, resp.Body)
	require.NoError(t, err)
	require.Equal(t, int64(largeBody), n)
	require.Equal(t, patternSum(largeBody), [32]byte(hash.Sum(nil)), "the body arrives byte for byte")
}

func testLargeRequestBody(t *testing.T, h Harness) {
	f := newFetcher(t, h, map[string]http.Handler{
		"w-sum": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hash := sha256.New()
			n, err := io.Copy(hash, r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			_, _ = fmt.Fprintf(w, "%d %x", n, hash.Sum(nil))
		}),
	})
	const size = 4 << 20
	body, err := io.ReadAll(&pattern{n: size})
	require.NoError(t, err)
	resp, err := fetch(defaultCtx(t), f, call{worker: "w-sum", method: http.MethodPost, path: "/upload", body: body})
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	sum := patternSum(size)
	require.Equal(t, fmt.Sprintf("%d %x", size, sum[:]), string(readAll(t, resp)))
}

// testStreaming: with Streams, Fetch returns while the worker is still
// writing, and the rest follows; without, the answer is complete and
// says so with its Content-Length.
func testStreaming(t *testing.T, h Harness) {
	g := newGate()
	f := newFetcher(t, h, map[string]http.Handler{
		"w-stream": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "first|")
			flush(w)
			if h.Streams {
				g.wait(r) // until the client has seen the first part
			}
			_, _ = io.WriteString(w, "second")
		}),
	}, g)
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	ctx := defaultCtx(t)
	go func() {
		resp, err := fetch(ctx, f, call{worker: "w-stream", path: "/"})
		done <- result{resp, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-time.After(slack):
		g.open()
		<-done
		t.Fatalf("Fetch waited for the worker's whole body, but the harness declares Streams")
	}
	require.NoError(t, res.err)
	defer res.resp.Body.Close()
	if !h.Streams {
		body := readAll(t, res.resp)
		require.Equal(t, "first|second", string(body))
		require.Equal(t, int64(len(body)), res.resp.ContentLength, "a buffered answer declares its length")
		return
	}
	first := make([]byte, len("first|"))
	_, err := io.ReadFull(res.resp.Body, first)
	require.NoError(t, err)
	require.Equal(t, "first|", string(first))
	g.open()
	rest, err := io.ReadAll(res.resp.Body)
	require.NoError(t, err)
	require.Equal(t, "second", string(rest))
}

// testConcurrent: many goroutines fetch from several workers at once;
// every answer is its own request's, and every worker is called exactly as
// often as asked.
func testConcurrent(t *testing.T, h Harness) {
	const (
		nWorkers    = 8
		goroutines  = 32
		perRoutine  = 8
		totalCalls  = goroutines * perRoutine
		perWorkerOf = totalCalls / nWorkers
	)
	hits := make([]atomic.Int64, nWorkers)
	workers := make(map[string]http.Handler, nWorkers)
	for i := range nWorkers {
		name := "w-" + strconv.Itoa(i)
		workers[name] = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits[i].Add(1)
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Worker", name)
			_, _ = fmt.Fprintf(w, "%s:%s:%s", name, r.URL.Query().Get("id"), b)
		})
	}
	f := newFetcher(t, h, workers)
	ctx := defaultCtx(t)
	var next atomic.Int64
	errs := make(chan error, goroutines)
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for {
				n := next.Add(1) - 1
				if n >= totalCalls {
					return
				}
				name := "w-" + strconv.Itoa(int(n%nWorkers))
				id := strconv.FormatInt(n, 10)
				resp, err := fetch(ctx, f, call{worker: name, method: http.MethodPost, path: "/c", query: "id=" + id, body: []byte("body-" + id)})
				if err != nil {
					errs <- fmt.Errorf("call %d: %w", n, err)
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				want := name + ":" + id + ":body-" + id
				if err != nil || string(b) != want || resp.Header.Get("X-Worker") != name {
					errs <- fmt.Errorf("call %d: got %q (%v), want %q from %s", n, b, err, want, name)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	var total int64
	for i := range hits {
		total += hits[i].Load()
		require.Equal(t, int64(perWorkerOf), hits[i].Load(), "worker w-%d", i)
	}
	require.Equal(t, int64(totalCalls), total)
}
