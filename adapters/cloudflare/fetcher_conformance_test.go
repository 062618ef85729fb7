package cloudflare_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/cloudflare"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/dispatch/fetchertest"
)

// conformanceSecret is the DISPATCH_SECRET of the emulated endpoint.
var conformanceSecret = []byte("conformance-dispatch-secret-0123")

// cloudflareHarness puts the suite's workers behind an emulated dispatch
// worker in gateway mode (dispatchEndpoint), over HTTP, and points a
// Fetcher with its default configuration at it. A worker goes over its
// limits as a Workers runtime reports it: the call to the user worker
// throws "Worker exceeded CPU time limit.".
var cloudflareHarness = fetchertest.Harness{
	New: func(tb testing.TB, workers map[string]http.Handler) dispatch.Fetcher {
		srv := httptest.NewServer(&dispatchEndpoint{secret: conformanceSecret, workers: workers})
		tb.Cleanup(srv.Close)
		f, err := cloudflare.NewFetcher(cloudflare.FetcherConfig{URL: srv.URL, Secret: conformanceSecret})
		if err != nil {
			tb.Fatal(err)
		}
		return f
	},
	CanLimit: true,
	OverLimit: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic(errors.New("Worker exceeded CPU time limit."))
	}),
	Streams: true,
}

// dispatchEndpoint emulates worker/dispatch.js in gateway mode: it checks
// the signature (cloudflare.Verify), builds the user worker's request from
// the signed path and host with every X-Dispatch-* header removed and
// X-Request-Id / X-Tenant-Id set, and calls the worker. A worker that
// "throws" (panics) before answering is classified as dispatch.js's
// classifyError does and answered with the JSON error body and
// X-Dispatch-Error; one that throws mid-body has its stream cut.
type dispatchEndpoint struct {
	secret  []byte
	workers map[string]http.Handler
}

// limitPatterns are dispatch.js's LIMIT_PATTERNS.
var limitPatterns = regexp.MustCompile(`(?i)exceeded (?:its )?cpu|cpu time limit|exceeded resource limits|too many subrequests|subrequest limit`)

var errorStatus = map[string]int{
	"bad_request": 400, "unauthorized": 401, "worker_not_found": 404,
	"tenant_worker_failure": 502, "worker_limit_exceeded": 503,
}

func emulatedError(w http.ResponseWriter, code, msg, rid, tenant string) {
	h := w.Header()
	clear(h)
	h.Set("Content-Type", "application/json")
	h.Set("X-Request-Id", rid)
	h.Set(cloudflare.HeaderError, code)
	h.Set("Cache-Control", "no-store")
	if tenant != "" {
		h.Set("X-Tenant-Id", tenant)
	}
	w.WriteHeader(errorStatus[code])
	_ = json.NewEncoder(w).Encode(dispatch.ErrorBody{Error: code, Message: msg, RequestID: rid})
}

func (d *dispatchEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s, err := cloudflare.Verify(r.Header, r.Method, d.secret, time.Now(), 0)
	if err != nil {
		emulatedError(w, "unauthorized", err.Error(), r.Header.Get("X-Request-Id"), "")
		return
	}
	h, ok := d.workers[s.WorkerName]
	if !ok {
		emulatedError(w, "worker_not_found", fmt.Sprintf("the tenant's worker does not exist: no worker named %q in the dispatch namespace", s.WorkerName), s.RequestID, s.TenantID)
		return
	}
	u, err := url.ParseRequestURI(s.Path)
	if err != nil {
		emulatedError(w, "bad_request", "the signed host or path is not a valid URL", s.RequestID, s.TenantID)
		return
	}
	out := r.Clone(r.Context())
	out.URL, out.RequestURI = u, s.Path
	if s.Host != "" {
		out.Host = s.Host
	}
	for k := range out.Header {
		if strings.HasPrefix(k, "X-Dispatch-") {
			delete(out.Header, k)
		}
	}
	out.Header.Set("X-Request-Id", s.RequestID)
	out.Header.Set("X-Tenant-Id", s.TenantID)
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		out.Body, out.ContentLength = http.NoBody, 0
	}
	tw := &finishingWriter{ResponseWriter: w, rid: s.RequestID, tenant: s.TenantID}
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if tw.wrote {
			panic(http.ErrAbortHandler) // the stream breaks off
		}
		msg := fmt.Sprint(v)
		code := "tenant_worker_failure"
		if limitPatterns.MatchString(msg) {
			code = "worker_limit_exceeded"
		}
		emulatedError(w, code, msg, s.RequestID, s.TenantID)
	}()
	h.ServeHTTP(tw, out)
}

// finishingWriter does what forward() does to the user worker's answer
// (X-Request-Id and X-Tenant-Id set, X-Dispatch-Error removed) when its
// headers go out, and remembers that they did.
type finishingWriter struct {
	http.ResponseWriter
	rid, tenant string
	wrote       bool
}

func (f *finishingWriter) WriteHeader(code int) {
	if !f.wrote {
		f.wrote = true
		h := f.Header()
		h.Set("X-Request-Id", f.rid)
		h.Set("X-Tenant-Id", f.tenant)
		h.Del(cloudflare.HeaderError)
	}
	f.ResponseWriter.WriteHeader(code)
}

func (f *finishingWriter) Write(b []byte) (int, error) {
	if !f.wrote {
		f.WriteHeader(http.StatusOK)
	}
	return f.ResponseWriter.Write(b)
}

func (f *finishingWriter) Flush() {
	if !f.wrote {
		f.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(f.ResponseWriter).Flush()
}

func (f *finishingWriter) Unwrap() http.ResponseWriter { return f.ResponseWriter }

func TestFetcherConformance(t *testing.T) {
	t.Parallel()
	fetchertest.Run(t, cloudflareHarness)
}

func BenchmarkFetcherConformance(b *testing.B) {
	fetchertest.Benchmark(b, cloudflareHarness)
}

// TestFetcherCallerClientNeverFollowsRedirects: a client the caller built
// gets the same no-redirect policy, on a copy: the caller's client is not
// changed.
func TestFetcherCallerClientNeverFollowsRedirects(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	srv := httptest.NewServer(&dispatchEndpoint{secret: conformanceSecret, workers: map[string]http.Handler{
		"w": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		}),
	}})
	t.Cleanup(srv.Close)
	own := &http.Client{}
	f, err := cloudflare.NewFetcher(cloudflare.FetcherConfig{URL: srv.URL, Secret: conformanceSecret, HTTPClient: own})
	require.NoError(t, err)
	p := &dispatch.Payload{RequestID: fetchertest.RequestID, TenantID: "acme", WorkerName: "w", Plan: "pro",
		Limits: fetchertest.Limits, Method: http.MethodPost, Host: "gw.example", Path: "/pay"}
	resp, err := f.Fetch(context.Background(), httptest.NewRequest(http.MethodPost, "http://gw.example/pay", strings.NewReader("body")), p)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusFound, resp.StatusCode)
	require.Equal(t, "/elsewhere", resp.Header.Get("Location"))
	require.Equal(t, int64(1), calls.Load(), "the worker runs once; its redirect is not followed back through the dispatch worker")
	require.Nil(t, own.CheckRedirect, "the caller's client is not changed")
}
