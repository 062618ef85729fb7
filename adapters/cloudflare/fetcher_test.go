package cloudflare_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/cloudflare"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/limits"
)

// fakeDispatchWorker plays the dispatch worker in gateway mode: it checks
// the signature with cloudflare.Verify and answers as dispatch.js does.
func fakeDispatchWorker(t *testing.T, secret []byte, workers map[string]http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fail := func(status int, code, msg, rid, tenant string) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set(cloudflare.HeaderError, code)
			w.Header().Set("X-Request-Id", rid)
			if tenant != "" {
				w.Header().Set("X-Tenant-Id", tenant)
			}
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(dispatch.ErrorBody{Error: code, Message: msg, RequestID: rid})
		}
		s, err := cloudflare.Verify(r.Header, r.Method, secret, time.Now(), 0)
		if err != nil {
			fail(401, "unauthorized", err.Error(), r.Header.Get("X-Request-Id"), "")
			return
		}
		h, ok := workers[s.WorkerName]
		if !ok {
			fail(404, "worker_not_found", "the tenant's worker does not exist", s.RequestID, s.TenantID)
			return
		}
		r.Header.Set("X-Limits", strings.Join([]string{r.Header.Get(cloudflare.HeaderCPUMs), r.Header.Get(cloudflare.HeaderSubrequests)}, "/"))
		r.Header.Set("X-Signed-Path", s.Path)
		r.Header.Set("X-Signed-Host", s.Host)
		switch r.URL.Query().Get("fail") {
		case "limit":
			fail(503, "worker_limit_exceeded", "the tenant's worker exceeded its limits: Worker exceeded CPU time limit.", s.RequestID, s.TenantID)
			return
		case "crash":
			fail(502, "tenant_worker_failure", "the tenant's worker failed or is unreachable: boom", s.RequestID, s.TenantID)
			return
		}
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{
		"method": r.Method, "path": r.URL.RequestURI(), "body": string(body),
		"limits": r.Header.Get("X-Limits"), "signedPath": r.Header.Get("X-Signed-Path"), "signedHost": r.Header.Get("X-Signed-Host"),
		"custom": r.Header.Get("X-Custom"),
	})
}

func payload(worker string) *dispatch.Payload {
	return &dispatch.Payload{RequestID: "6f1c1b0e-3a53-4a4e-9f8e-0d6c1f0b9a11", TenantID: "acme", WorkerName: worker, Plan: "pro",
		Limits: limits.Limits{CPUMs: 200, SubRequests: 50}, Method: "POST", Host: "gw.example:8080", Path: "/v1/a%2Fb", Query: "x=1"}
}

func newFetcher(t *testing.T, url string, secret []byte) *cloudflare.Fetcher {
	t.Helper()
	f, err := cloudflare.NewFetcher(cloudflare.FetcherConfig{URL: url, Secret: secret})
	require.NoError(t, err)
	return f
}

func TestFetcherForwardsSignedRequest(t *testing.T) {
	t.Parallel()
	srv := fakeDispatchWorker(t, testSecret, map[string]http.HandlerFunc{"tenant-acme-worker": echo})
	f := newFetcher(t, srv.URL, testSecret)
	req := httptest.NewRequest("POST", "http://gw.example:8080/v1/a%2Fb?x=1", strings.NewReader("hello"))
	req.Header.Set("X-Custom", "kept")
	req.Header.Set("X-Dispatch-Worker", "spoofed")
	resp, err := f.Fetch(context.Background(), req, payload("tenant-acme-worker"))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	var got map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	require.Equal(t, map[string]string{"method": "POST", "path": "/v1/a%2Fb?x=1", "body": "hello", "limits": "200/50",
		"signedPath": "/v1/a%2Fb?x=1", "signedHost": "gw.example:8080", "custom": "kept"}, got)
}

func TestFetcherMapsErrors(t *testing.T) {
	t.Parallel()
	srv := fakeDispatchWorker(t, testSecret, map[string]http.HandlerFunc{
		"tenant-acme-worker": echo,
		"own-404":            func(w http.ResponseWriter, r *http.Request) { http.Error(w, "nothing here", 404) },
	})
	f := newFetcher(t, srv.URL, testSecret)
	cases := []struct {
		name   string
		worker string
		path   string
		secret []byte
		want   error
		status int
	}{
		{"worker not found", "tenant-ghost-worker", "/", nil, dispatch.ErrWorkerNotFound, 404},
		{"limit exceeded", "tenant-acme-worker", "/?fail=limit", nil, dispatch.ErrWorkerLimitExceeded, 503},
		{"worker failure", "tenant-acme-worker", "/?fail=crash", nil, dispatch.ErrWorkerFailure, 502},
		{"bad secret", "tenant-acme-worker", "/", []byte("the-wrong-secret-0000"), dispatch.ErrWorkerFailure, 502},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ff := f
			if c.secret != nil {
				ff = newFetcher(t, srv.URL, c.secret)
			}
			p := payload(c.worker)
			p.Method, p.Path, p.Query = "GET", c.path, ""
			if i := strings.IndexByte(c.path, '?'); i >= 0 {
				p.Path, p.Query = c.path[:i], c.path[i+1:]
			}
			req := httptest.NewRequest("GET", "http://gw.example"+c.path, nil)
			resp, err := ff.Fetch(context.Background(), req, p)
			require.Nil(t, resp)
			require.ErrorIs(t, err, c.want)
			status, _ := dispatch.StatusOf(err)
			require.Equal(t, c.status, status)
			var re *cloudflare.RemoteError
			require.ErrorAs(t, err, &re)
			require.NotEmpty(t, re.Message)
		})
	}
	t.Run("tenant's own 404 passes through", func(t *testing.T) {
		p := payload("own-404")
		p.Method = "GET"
		resp, err := f.Fetch(context.Background(), httptest.NewRequest("GET", "http://gw.example/", nil), p)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, 404, resp.StatusCode)
	})
}

func TestFetcherTimeoutAndUnreachable(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer slow.Close()
	f := newFetcher(t, slow.URL, testSecret)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := f.Fetch(ctx, httptest.NewRequest("GET", "http://gw.example/", nil), payload("w"))
	require.ErrorIs(t, err, dispatch.ErrWorkerTimeout)
	require.Equal(t, int32(1), calls.Load())

	closed := httptest.NewServer(http.NotFoundHandler())
	url := closed.URL
	closed.Close()
	f = newFetcher(t, url, testSecret)
	_, err = f.Fetch(context.Background(), httptest.NewRequest("GET", "http://gw.example/", nil), payload("w"))
	require.ErrorIs(t, err, dispatch.ErrWorkerFailure)
}

func TestNewFetcherValidates(t *testing.T) {
	t.Parallel()
	for _, cfg := range []cloudflare.FetcherConfig{
		{Secret: testSecret},
		{URL: "ftp://x", Secret: testSecret},
		{URL: "https://dispatch.example"},
		{URL: "https://dispatch.example", Secret: []byte("short")},
	} {
		_, err := cloudflare.NewFetcher(cfg)
		require.Error(t, err)
	}
}

// A Fetcher without a client of the caller's keeps a connection to the
// dispatch worker for every request in flight: later rounds of concurrent
// requests reuse the first round's connections (http.DefaultTransport
// keeps two idle per host and dialed ~30 new ones a round here).
func TestFetcherReusesConnections(t *testing.T) {
	t.Parallel()
	var conns sync.Map // client address of each connection used
	srv := fakeDispatchWorker(t, testSecret, map[string]http.HandlerFunc{"tenant-acme-worker": func(w http.ResponseWriter, r *http.Request) {
		conns.Store(r.RemoteAddr, true)
		time.Sleep(2 * time.Millisecond) // every request of a round is in flight at once
		echo(w, r)
	}})
	f := newFetcher(t, srv.URL, testSecret)
	const inFlight, rounds = 32, 5
	var failed atomic.Int64
	for range rounds {
		var wg sync.WaitGroup
		for range inFlight {
			wg.Go(func() {
				req := httptest.NewRequest("POST", "http://gw.example:8080/v1/a%2Fb?x=1", strings.NewReader("hello"))
				resp, err := f.Fetch(context.Background(), req, payload("tenant-acme-worker"))
				if err != nil {
					failed.Add(1)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
				}
			})
		}
		wg.Wait()
	}
	require.Zero(t, failed.Load(), "requests that failed")
	dialed := 0
	conns.Range(func(any, any) bool { dialed++; return true })
	require.LessOrEqual(t, dialed, inFlight, "connections dialed for %d rounds of %d requests", rounds, inFlight)
}
