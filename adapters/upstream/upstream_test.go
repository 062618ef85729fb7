package upstream_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/upstream"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/limits"
)

func payload(worker string) *dispatch.Payload {
	return &dispatch.Payload{
		RequestID:  "6f1c2a4e-8d53-4c3b-9a53-2b8a1c0e7f11",
		TenantID:   "acme",
		WorkerName: worker,
		Plan:       "pro",
		Limits:     limits.Limits{CPUMs: 200, SubRequests: 50},
	}
}

func TestNewValidatesWorkers(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"", "ftp://h/x", "http://", "http://u:p@h/", "http://h/#frag", "://nope", "h:80"} {
		_, err := upstream.New(upstream.Config{Workers: map[string]string{"w": bad}})
		require.Error(t, err, bad)
		require.Contains(t, err.Error(), `"w"`, "the error names the worker")
	}
	_, err := upstream.New(upstream.Config{Workers: map[string]string{"": "http://h"}})
	require.Error(t, err)
	f, err := upstream.New(upstream.Config{})
	require.NoError(t, err, "an empty table is valid")
	require.False(t, f.Has("x"))
}

func TestForwardsHeadersBothWays(t *testing.T) {
	t.Parallel()
	var got seen
	up, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		got.add(r)
		h := w.Header()
		h.Set("Connection", "X-Resp-Hop")
		h.Set("X-Resp-Hop", "a")
		h.Set("Keep-Alive", "timeout=5")
		h.Set("Proxy-Authenticate", "Basic")
		h.Set("Upgrade", "h2c")
		h.Set("Trailer", "X-Sum")
		h.Set("X-Kept", "yes")
		_, _ = io.WriteString(w, "hello")
	})
	f := newFetcher(t, map[string]string{"w": up.URL})

	req := httptest.NewRequest(http.MethodGet, "http://gw.example/rows?country=FR", nil)
	req.RemoteAddr = "192.0.2.10:5555"
	req.Header.Set("Connection", "X-Custom, keep-alive")
	req.Header.Set("X-Custom", "1")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("Proxy-Authorization", "Basic Zm9v")
	req.Header.Set("Proxy-Connection", "keep-alive")
	req.Header.Set("Te", "trailers")
	req.Header.Set("Trailer", "X-Sum")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("X-Forwarded-Host", "spoofed.example")
	req.Header.Set("X-Dispatch-Cpu-Ms", "999999")
	req.Header.Set("X-Dispatch-Whatever", "forged")
	req.Header.Set("X-Request-Id", "client-chosen")
	req.Header.Set("Accept", "text/csv")
	before := req.Header.Clone()

	resp, err := f.Fetch(context.Background(), req, payload("w"))
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, "hello", string(body))

	r := got.last(t)
	require.Equal(t, "/rows", r.URL.Path)
	require.Equal(t, "country=FR", r.URL.RawQuery)
	for _, h := range []string{"Connection", "X-Custom", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Te", "Trailer", "Upgrade", "X-Dispatch-Whatever"} {
		require.Empty(t, r.Header.Values(h), "request header %s must not reach the worker", h)
	}
	require.Equal(t, "203.0.113.7, 192.0.2.10", r.Header.Get("X-Forwarded-For"))
	require.Equal(t, "gw.example", r.Header.Get("X-Forwarded-Host"))
	require.Equal(t, "http", r.Header.Get("X-Forwarded-Proto"))
	require.Equal(t, "200", r.Header.Get("X-Dispatch-Cpu-Ms"))
	require.Equal(t, "50", r.Header.Get("X-Dispatch-Subrequests"))
	require.Equal(t, "6f1c2a4e-8d53-4c3b-9a53-2b8a1c0e7f11", r.Header.Get("X-Request-Id"))
	require.Equal(t, "acme", r.Header.Get("X-Tenant-Id"))
	require.Equal(t, "text/csv", r.Header.Get("Accept"))
	require.Empty(t, r.Header.Get("User-Agent"), "no Go User-Agent is made up")
	require.Equal(t, strings.TrimPrefix(up.URL, "http://"), r.Host, "Host is the worker's")
	require.Equal(t, before, req.Header, "the caller's request is not changed")

	for _, h := range []string{"Connection", "X-Resp-Hop", "Keep-Alive", "Proxy-Authenticate", "Upgrade", "Trailer"} {
		require.Empty(t, resp.Header.Values(h), "response header %s must not reach the client", h)
	}
	require.Equal(t, "yes", resp.Header.Get("X-Kept"))
}

func TestForwardedProtoHTTPSAndTrust(t *testing.T) {
	t.Parallel()
	var got seen
	up, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { got.add(r) })
	fetch := func(cfg upstream.Config, req *http.Request) *http.Request {
		cfg.Workers = map[string]string{"w": up.URL}
		f, err := upstream.New(cfg)
		require.NoError(t, err)
		defer f.CloseIdleConnections()
		resp, err := f.Fetch(context.Background(), req, payload("w"))
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		return got.last(t)
	}

	tlsReq := httptest.NewRequest(http.MethodGet, "https://secure.example/", nil)
	r := fetch(upstream.Config{}, tlsReq)
	require.Equal(t, "https", r.Header.Get("X-Forwarded-Proto"))
	require.Equal(t, "192.0.2.1", r.Header.Get("X-Forwarded-For"), "httptest's RemoteAddr")

	behindLB := httptest.NewRequest(http.MethodGet, "http://internal:8402/", nil)
	behindLB.Header.Set("X-Forwarded-Proto", "https")
	behindLB.Header.Set("X-Forwarded-Host", "api.example")
	r = fetch(upstream.Config{TrustForwarded: true, PreserveHost: true}, behindLB)
	require.Equal(t, "https", r.Header.Get("X-Forwarded-Proto"))
	require.Equal(t, "api.example", r.Header.Get("X-Forwarded-Host"))
	require.Equal(t, "internal:8402", r.Host, "PreserveHost sends the client's Host")
}

func TestJoinsBasePathAndKeepsQuery(t *testing.T) {
	t.Parallel()
	var got seen
	up, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { got.add(r) })
	cases := []struct {
		base, target, want string
	}{
		{"", "/rows", "/rows"},
		{"/", "/rows", "/rows"},
		{"/api", "/rows", "/api/rows"},
		{"/api/", "/rows", "/api/rows"},
		{"/api/", "/", "/api/"},
		{"/api", "/rows?limit=5&offset=10", "/api/rows?limit=5&offset=10"},
		{"/api?key=k", "/rows?limit=5", "/api/rows?key=k&limit=5"},
		{"/api?key=k", "/rows", "/api/rows?key=k"},
		{"/a%2Fb", "/x%2Fy", "/a%2Fb/x%2Fy"},
		{"/api", "/caf%C3%A9", "/api/caf%C3%A9"},
	}
	for _, c := range cases {
		t.Run(c.base+" "+c.target, func(t *testing.T) {
			f, err := upstream.New(upstream.Config{Workers: map[string]string{"w": up.URL + c.base}})
			require.NoError(t, err)
			defer f.CloseIdleConnections()
			resp, err := f.Fetch(context.Background(), httptest.NewRequest(http.MethodGet, c.target, nil), payload("w"))
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			require.Equal(t, c.want, got.last(t).RequestURI)
		})
	}
}

func TestErrorsMapToSentinels(t *testing.T) {
	t.Parallel()
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	slow, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	})
	reset, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // RST instead of FIN
			}
			_ = c.Close()
		}
	})
	busy, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Dispatch-Limit-Exceeded", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "cpu limit")
	})
	refused := refusedURL(t)

	dnsFail := upstream.NewTransport(upstream.TransportConfig{})
	dnsFail.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return nil, &net.DNSError{Err: "no such host", Name: "worker.invalid", IsNotFound: true}
	}
	headerTimeout := upstream.NewTransport(upstream.TransportConfig{ResponseHeaderTimeout: 50 * time.Millisecond})

	cases := []struct {
		name      string
		workers   map[string]string
		transport http.RoundTripper
		worker    string
		deadline  time.Duration
		want      error
	}{
		{"unknown worker", map[string]string{"w": slow.URL}, nil, "other", 0, dispatch.ErrWorkerNotFound},
		{"connection refused", map[string]string{"w": refused}, nil, "w", 0, dispatch.ErrWorkerFailure},
		{"connection reset", map[string]string{"w": reset.URL}, nil, "w", 0, dispatch.ErrWorkerFailure},
		{"dns failure", map[string]string{"w": "http://worker.invalid"}, dnsFail, "w", 0, dispatch.ErrWorkerFailure},
		{"context deadline", map[string]string{"w": slow.URL}, nil, "w", 100 * time.Millisecond, dispatch.ErrWorkerTimeout},
		{"response header timeout", map[string]string{"w": slow.URL}, headerTimeout, "w", 0, dispatch.ErrWorkerTimeout},
		{"limit breach signalled", map[string]string{"w": busy.URL}, nil, "w", 0, dispatch.ErrWorkerLimitExceeded},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f, err := upstream.New(upstream.Config{Workers: c.workers, Transport: c.transport})
			require.NoError(t, err)
			ctx := context.Background()
			if c.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, c.deadline)
				defer cancel()
			}
			req := httptest.NewRequest(http.MethodGet, "/x", nil).WithContext(ctx)
			resp, err := f.Fetch(ctx, req, payload(c.worker))
			if resp != nil {
				resp.Body.Close()
			}
			require.ErrorIs(t, err, c.want)
			for _, other := range []error{dispatch.ErrWorkerNotFound, dispatch.ErrWorkerFailure, dispatch.ErrWorkerTimeout, dispatch.ErrWorkerLimitExceeded} {
				if other != c.want {
					require.NotErrorIs(t, err, other)
				}
			}
		})
	}
}

func TestPlain503PassesThrough(t *testing.T) {
	t.Parallel()
	up, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "3")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "maintenance")
	})
	f := newFetcher(t, map[string]string{"w": up.URL})
	resp, err := f.Fetch(context.Background(), httptest.NewRequest(http.MethodGet, "/", nil), payload("w"))
	require.NoError(t, err, "a 503 without the limit header is the worker's own answer")
	defer resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Equal(t, "3", resp.Header.Get("Retry-After"))
}

func TestReusesConnections(t *testing.T) {
	t.Parallel()
	up, conns := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"ok":true}`)
	})
	f := newFetcher(t, map[string]string{"w": up.URL})
	get := func() {
		resp, err := f.Fetch(context.Background(), httptest.NewRequest(http.MethodGet, "/", nil), payload("w"))
		require.NoError(t, err)
		_, err = io.Copy(io.Discard, resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
	}

	for range 100 {
		get()
	}
	require.EqualValues(t, 1, conns.Load(), "sequential requests share one connection")

	const clients, each = 48, 25
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range each {
				get()
			}
		})
	}
	wg.Wait()
	// A connection goes back to the pool just after its body is closed, so
	// a client may now and then dial while its previous connection is on
	// its way back; but nothing near one connection per request (1200),
	// which is what a small idle pool (MaxIdleConnsPerHost 2, the
	// http.DefaultTransport value) gives.
	n := conns.Load()
	require.LessOrEqual(t, n, int64(2*clients), "connections are reused under concurrency")
	// Every connection stayed in the pool: more requests open none.
	for range 100 {
		get()
	}
	require.Equal(t, n, conns.Load(), "idle connections are kept and reused")
	t.Logf("%d requests over %d connections", 200+clients*each, n)
}

func TestSetWorkersSwapsAtomically(t *testing.T) {
	t.Parallel()
	one, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "one") })
	two, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "two") })
	f := newFetcher(t, map[string]string{"w": one.URL})

	require.Error(t, f.SetWorkers(map[string]string{"w": "not a url"}))
	require.Equal(t, map[string]string{"w": one.URL}, f.Workers(), "a bad table leaves the old one in force")

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := f.Fetch(context.Background(), httptest.NewRequest(http.MethodGet, "/", nil), payload("w"))
				if !errors.Is(err, dispatch.ErrWorkerNotFound) {
					require.NoError(t, err)
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					require.Contains(t, []string{"one", "two"}, string(b))
				}
			}
		})
	}
	for i := range 50 {
		switch i % 3 {
		case 0:
			require.NoError(t, f.SetWorkers(map[string]string{"w": two.URL}))
		case 1:
			require.NoError(t, f.SetWorkers(map[string]string{"w": one.URL}))
		default:
			require.NoError(t, f.SetWorkers(map[string]string{"x": one.URL}))
		}
	}
	close(stop)
	wg.Wait()
	require.NoError(t, f.SetWorkers(map[string]string{"w": two.URL}))
	require.True(t, f.Has("w"))
	resp, err := f.Fetch(context.Background(), httptest.NewRequest(http.MethodGet, "/", nil), payload("w"))
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, "two", string(b))
}

func TestFallbackServesUnknownWorkers(t *testing.T) {
	t.Parallel()
	inproc := dispatch.NewHandlerFetcher(map[string]http.Handler{
		"local": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "local") }),
	})
	f, err := upstream.New(upstream.Config{Fallback: inproc})
	require.NoError(t, err)
	resp, err := f.Fetch(context.Background(), httptest.NewRequest(http.MethodGet, "/", nil), payload("local"))
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, "local", string(b))
	_, err = f.Fetch(context.Background(), httptest.NewRequest(http.MethodGet, "/", nil), payload("nobody"))
	require.ErrorIs(t, err, dispatch.ErrWorkerNotFound)
}

// TestThroughDispatcher runs the fetcher behind a real dispatcher and checks
// the wire contract of DESIGN section 3 step 7.
func TestThroughDispatcher(t *testing.T) {
	t.Parallel()
	var got seen
	acme, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		got.add(r)
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"path":%q}`, r.URL.RequestURI())
	})
	hang := make(chan struct{})
	slow, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(hang) })
	busy, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Dispatch-Limit-Exceeded", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	f := newFetcher(t, map[string]string{
		"w-acme": acme.URL + "/v1",
		"w-down": refusedURL(t),
		"w-slow": slow.URL,
		"w-busy": busy.URL,
	})
	gw := newGateway(t, f)

	cases := []struct {
		path, tenant string
		status       int
		code         string
	}{
		{"/t/acme/rows?country=FR", "acme", http.StatusOK, ""},
		{"/t/ghost/rows", "ghost", http.StatusNotFound, "worker_not_found"},
		{"/t/down/rows", "down", http.StatusBadGateway, "tenant_worker_failure"},
		{"/t/slow/rows", "slow", http.StatusGatewayTimeout, "worker_timeout"},
		{"/t/busy/rows", "busy", http.StatusServiceUnavailable, "worker_limit_exceeded"},
	}
	for _, c := range cases {
		t.Run(c.tenant, func(t *testing.T) {
			resp, err := gw.Client().Get(gw.URL + c.path)
			require.NoError(t, err)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.Equal(t, c.status, resp.StatusCode, string(body))
			rid := resp.Header.Get("X-Request-Id")
			require.Len(t, rid, 36, "X-Request-Id is a UUID")
			require.Equal(t, c.tenant, resp.Header.Get("X-Tenant-Id"))
			if c.code == "" {
				require.JSONEq(t, `{"path":"/v1/rows?country=FR"}`, string(body))
				r := got.last(t)
				require.Equal(t, rid, r.Header.Get("X-Request-Id"), "the worker sees the same request id")
				require.Equal(t, "acme", r.Header.Get("X-Tenant-Id"))
				require.Equal(t, "200", r.Header.Get("X-Dispatch-Cpu-Ms"), "pro plan")
				require.Equal(t, "50", r.Header.Get("X-Dispatch-Subrequests"))
				require.Equal(t, "127.0.0.1", r.Header.Get("X-Forwarded-For"))
				require.Equal(t, strings.TrimPrefix(gw.URL, "http://"), r.Header.Get("X-Forwarded-Host"))
				return
			}
			require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			var eb dispatch.ErrorBody
			require.NoError(t, json.Unmarshal(body, &eb))
			require.Equal(t, dispatch.ErrorBody{Error: c.code, Message: eb.Message, RequestID: rid}, eb)
			require.NotEmpty(t, eb.Message)
		})
	}
}

// TestStreamsRequestBody proves the request body is not buffered: the
// client sends the second half only after the worker has read the first.
func TestStreamsRequestBody(t *testing.T) {
	t.Parallel()
	const half = 1 << 20
	firstHalf := make(chan struct{})
	up, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		n, err := io.CopyN(io.Discard, r.Body, half)
		if err != nil || n != half {
			http.Error(w, "short", http.StatusBadRequest)
			return
		}
		close(firstHalf)
		rest, _ := io.Copy(io.Discard, r.Body)
		_, _ = fmt.Fprint(w, n+rest)
	})
	gw := newGateway(t, newFetcher(t, map[string]string{"w-acme": up.URL}))

	pr, pw := io.Pipe()
	go func() {
		_, _ = io.Copy(pw, &pattern{left: half})
		select {
		case <-firstHalf:
			_, _ = io.Copy(pw, &pattern{left: half})
			_ = pw.Close()
		case <-time.After(10 * time.Second):
			_ = pw.CloseWithError(errors.New("the worker never saw the first half: the body was buffered"))
		}
	}()
	resp, err := gw.Client().Post(gw.URL+"/t/acme/upload", "application/octet-stream", pr)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.Equal(t, fmt.Sprint(2*half), string(body))
}

// TestStreamsResponseBody proves the response body is not buffered: the
// worker sends the second half only after the client has read most of the
// first.
func TestStreamsResponseBody(t *testing.T) {
	t.Parallel()
	const half = 1 << 20
	clientRead := make(chan struct{})
	up, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(w, &pattern{left: half})
		_ = http.NewResponseController(w).Flush()
		select {
		case <-clientRead:
		case <-time.After(10 * time.Second):
			return // the client never got the first half: truncated answer
		}
		_, _ = io.Copy(w, &pattern{left: half})
	})
	gw := newGateway(t, newFetcher(t, map[string]string{"w-acme": up.URL}))

	resp, err := gw.Client().Get(gw.URL + "/t/acme/download")
	require.NoError(t, err)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	n, err := io.CopyN(io.Discard, br, half/2)
	require.NoError(t, err)
	close(clientRead)
	rest, err := io.Copy(io.Discard, br)
	require.NoError(t, err)
	require.EqualValues(t, 2*half, n+rest, "the whole body arrives")
}

// TestStreams50MBWithoutBuffering sends 50 MB each way through a dispatcher
// and checks the process allocated far less than the body size.
func TestStreams50MBWithoutBuffering(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 100 MB")
	}
	// Not parallel: the allocation count must be this test's alone.
	const size = 50 << 20
	up, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		if n != size {
			http.Error(w, fmt.Sprint("got ", n), http.StatusBadRequest)
			return
		}
		_, _ = io.Copy(w, &pattern{left: size})
	})
	gw := newGateway(t, newFetcher(t, map[string]string{"w-acme": up.URL}))

	allocated := allocatedBy(t, func() {
		req, err := http.NewRequest(http.MethodPut, gw.URL+"/t/acme/blob", &pattern{left: size})
		require.NoError(t, err)
		req.ContentLength = size
		resp, err := gw.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		n, err := io.Copy(io.Discard, resp.Body)
		require.NoError(t, err)
		require.EqualValues(t, size, n)
	})
	t.Logf("moved %d MB each way, allocated %.1f MB", size>>20, float64(allocated)/(1<<20))
	require.Less(t, allocated, uint64(size/4), "bodies must stream, not be buffered")
}
