package dispatch_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/tenant"
)

// consumer is a stage that reads a request header no worker may see.
type consumer struct{ dispatch.StageFunc }

func (consumer) ConsumedHeaders() []string { return []string{"Payment-Signature", "X-Payment"} }

func passThrough() dispatch.StageFunc {
	return func(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
		return next(ctx, x)
	}
}

// headerEcho answers with the request headers it received.
var headerEcho = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(r.Header)
})

func newHardened(t *testing.T, worker http.Handler, mutate func(*dispatch.Config)) *dispatch.Dispatcher {
	t.Helper()
	d, err := tenant.ParseDirectory([]byte(`{"tenants":[
	 {"slug":"free1","workerName":"w"},
	 {"slug":"own","workerName":"w","hosts":["own.example"]},
	 {"slug":"jar","workerName":"w","cookies":true}]}`))
	require.NoError(t, err)
	cfg := dispatch.Config{Tenants: tenant.NewRegistry(d), Fetcher: dispatch.NewHandlerFetcher(map[string]http.Handler{"w": worker}),
		Stages: []dispatch.Stage{consumer{passThrough()}}}
	if mutate != nil {
		mutate(&cfg)
	}
	disp, err := dispatch.NewDispatcher(cfg)
	require.NoError(t, err)
	return disp
}

func received(t *testing.T, rec *httptest.ResponseRecorder) http.Header {
	t.Helper()
	require.Equal(t, 200, rec.Code, rec.Body.String())
	var h http.Header
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &h))
	return h
}

// Finding 4: no worker, of any tenant (free ones included), sees a
// client's signed payment.
func TestPaymentHeadersNeverReachAnyWorker(t *testing.T) {
	t.Parallel()
	d := newHardened(t, headerEcho, nil)
	for _, target := range []string{"http://gw/t/free1/x", "http://own.example/x"} {
		h := received(t, do(t, d, "GET", target, map[string]string{"Payment-Signature": "sig", "X-Payment": "v1", "Host": hostOf(target)}))
		require.Empty(t, h.Get("Payment-Signature"), target)
		require.Empty(t, h.Get("X-Payment"), target)
	}
}

func hostOf(target string) string {
	rest := strings.TrimPrefix(target, "http://")
	return rest[:strings.IndexByte(rest, '/')]
}

// Finding 4: a worker's own 402 is never relayed as a challenge.
func TestWorker402IsAWorkerFailure(t *testing.T) {
	t.Parallel()
	d := newHardened(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("PAYMENT-REQUIRED", "eyJ4NDAyVmVyc2lvbiI6Mn0=")
		w.WriteHeader(http.StatusPaymentRequired)
		_, _ = io.WriteString(w, `{"x402Version":1,"accepts":[{"payTo":"0xtenant"}]}`)
	}), nil)
	rec := do(t, d, "GET", "http://gw/t/free1/x", nil)
	require.Equal(t, http.StatusBadGateway, rec.Code)
	require.Equal(t, "tenant_worker_failure", errorBody(t, rec).Error)
	require.Empty(t, rec.Header().Get("PAYMENT-REQUIRED"))
	require.NotContains(t, rec.Body.String(), "0xtenant")
}

// Finding 9: underscore spellings of gateway headers (merged with the real
// ones by CGI and WSGI servers) and the client's Forwarded never reach a
// worker.
func TestSpoofableHeadersAreDropped(t *testing.T) {
	t.Parallel()
	d := newHardened(t, headerEcho, nil)
	h := received(t, do(t, d, "GET", "http://gw/t/free1/x", map[string]string{
		"X_Tenant_Id": "paid1", "X_Dispatch_Cpu_Ms": "999999", "Forwarded": "for=1.2.3.4;host=evil", "X-Kept": "yes",
	}))
	for k := range h {
		require.NotContains(t, k, "_", "header %q reached the worker", k)
	}
	require.Empty(t, h.Get("Forwarded"))
	require.Equal(t, "yes", h.Get("X-Kept"))
}

// Finding 9: tenants under /t/ share the platform's host, so cookies do not
// cross between client and worker unless the tenant opted in; a tenant on
// its own host keeps them.
func TestCookiesOnASharedHost(t *testing.T) {
	t.Parallel()
	worker := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "tenant"})
		headerEcho(w, r)
	})
	d := newHardened(t, worker, nil)
	for target, keep := range map[string]bool{"http://gw/t/free1/x": false, "http://gw/t/jar/x": true, "http://own.example/x": true} {
		rec := do(t, d, "GET", target, map[string]string{"Cookie": "platform=secret", "Host": hostOf(target)})
		h := received(t, rec)
		if keep {
			require.Equal(t, "platform=secret", h.Get("Cookie"), target)
			require.NotEmpty(t, rec.Header().Get("Set-Cookie"), target)
		} else {
			require.Empty(t, h.Get("Cookie"), target)
			require.Empty(t, rec.Header().Get("Set-Cookie"), target)
		}
	}
}

// Finding 2: a body over the cap is 413 with the JSON error body, before
// the pipeline when its length is declared, and as soon as the worker reads
// past the cap otherwise.
func TestBodyCap(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	reader := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if _, err := io.ReadAll(r.Body); err != nil {
			panic(http.ErrAbortHandler) // as a server does when the body fails
		}
		_, _ = io.WriteString(w, "ok")
	})
	d := newHardened(t, reader, func(c *dispatch.Config) { c.MaxBodyBytes = 1024 })

	req := httptest.NewRequest("POST", "http://gw/t/free1/x", strings.NewReader(strings.Repeat("x", 2048)))
	rec := httptest.NewRecorder()
	d.ServeHTTP(rec, req)
	require.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
	require.Equal(t, "request_too_large", errorBody(t, rec).Error)
	require.Equal(t, int64(0), calls.Load(), "a declared length over the cap never reaches the worker")

	req = httptest.NewRequest("POST", "http://gw/t/free1/x", io.NopCloser(strings.NewReader(strings.Repeat("x", 2048))))
	req.ContentLength = -1
	rec = httptest.NewRecorder()
	d.ServeHTTP(rec, req)
	require.GreaterOrEqual(t, rec.Code, 400)
	require.NotEqual(t, "ok", rec.Body.String())

	req = httptest.NewRequest("POST", "http://gw/t/free1/x", strings.NewReader(strings.Repeat("x", 1024)))
	rec = httptest.NewRecorder()
	d.ServeHTTP(rec, req)
	require.Equal(t, 200, rec.Code, "a body at the cap passes")
}

// Finding 2: behind a server that sets no timeouts, the handler still does
// not wait forever for a body a client promised and never sends.
func TestReadTimeoutWithoutServerTimeouts(t *testing.T) {
	t.Parallel()
	d := newHardened(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}), func(c *dispatch.Config) { c.ReadTimeout = 300 * time.Millisecond })
	srv := httptest.NewServer(d) // no ReadTimeout, no WriteTimeout
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "POST /t/free1/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 100000\r\n\r\nx")
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	start := time.Now()
	buf := make([]byte, 512)
	n, _ := conn.Read(buf)
	require.Less(t, time.Since(start), 4*time.Second, "the slow body was cut off")
	if n > 0 {
		require.NotContains(t, string(buf[:n]), " 200 ")
	}
}

// Requests that name no tenant go to the fallback handler (the marketplace
// front) when one is set; a tenant's own host still reaches the tenant.
func TestFallbackServesWhatNamesNoTenant(t *testing.T) {
	t.Parallel()
	front := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "front:"+r.URL.Path) })
	d := newHardened(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "tenant") }),
		func(c *dispatch.Config) { c.Fallback = front })
	rec := do(t, d, "GET", "http://gw/apis/free1", nil)
	require.Equal(t, "front:/apis/free1", rec.Body.String())
	require.NotEmpty(t, rec.Header().Get("X-Request-Id"))
	rec = do(t, d, "GET", "http://own.example/apis/x", map[string]string{"Host": "own.example"})
	require.Equal(t, "tenant", rec.Body.String())
	rec = do(t, d, "GET", "http://gw/t/Bad_Slug/x", nil)
	require.Equal(t, 400, rec.Code, "a malformed tenant path is still refused")
}

// The one error type: details and headers reach the body and the answer,
// errors.Is matches detailed copies, and 5xx answers carry no internals.
func TestErrorRenderer(t *testing.T) {
	t.Parallel()
	e := dispatch.ErrInvalidPayment.With("bad header", errors.New("base64: illegal"))
	e.Header = http.Header{"Payment-Required": {"abc"}}
	e.Details = map[string]any{"x402Version": 1, "accepts": []string{"a"}, "ok": true}
	require.ErrorIs(t, e, dispatch.ErrInvalidPayment)
	require.NotErrorIs(t, e, dispatch.ErrBadRequest)
	resp := dispatch.ErrorResponse(e, "rid")
	require.Equal(t, 400, resp.StatusCode)
	require.Equal(t, "abc", resp.Header.Get("Payment-Required"))
	var body map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, false, body["ok"], "details never replace the gateway's fields")
	require.Equal(t, "invalid_payment", body["error"])
	require.Equal(t, "bad header: base64: illegal", body["message"])
	require.EqualValues(t, 1, body["x402Version"])

	internal := dispatch.ErrStoreUnavailable.With("redis at 10.0.0.7:6379 refused", errors.New("dial tcp 10.0.0.7:6379"))
	resp = dispatch.ErrorResponse(internal, "rid")
	b, _ := io.ReadAll(resp.Body)
	require.Equal(t, 503, resp.StatusCode)
	require.NotContains(t, string(b), "10.0.0.7")
	require.Contains(t, string(b), dispatch.ErrStoreUnavailable.Message)
}

// The lifecycle a stage's error carries is the request's lifecycle.
func TestLifecycleCarriedByErrors(t *testing.T) {
	t.Parallel()
	ev := &recorded{}
	d := newHardened(t, headerEcho, func(c *dispatch.Config) {
		c.Events = ev
		c.Stages = []dispatch.Stage{dispatch.StageFunc(func(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
			return nil, dispatch.ErrUsageQuotaExceeded.With("", nil)
		})}
	})
	rec := do(t, d, "GET", "http://gw/t/free1/x", nil)
	require.Equal(t, 429, rec.Code)
	ev.mu.Lock()
	defer ev.mu.Unlock()
	last := ev.events[len(ev.events)-1]
	require.Equal(t, dispatch.LifecycleUsageQuotaExceeded, last.Lifecycle)
	require.Equal(t, dispatch.LifecycleUsageQuotaExceeded, last.Exchange.Lifecycle)
}

// The exchange carries the route's price: the most specific route, or the
// tenant's own.
func TestExchangeCarriesTheRoutePrice(t *testing.T) {
	t.Parallel()
	d, err := tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"p","workerName":"w","x402Enabled":true,"priceUsd":"0.01",
	  "routes":[{"path":"/free","priceUsd":"0"},{"method":"GET","path":"/rows/:id","priceUsd":"0.002"}]}]}`))
	require.NoError(t, err)
	var got []string
	stage := dispatch.StageFunc(func(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
		got = append(got, x.Price.PriceUSD.String()+"/"+x.Price.Pattern)
		return dispatch.NewResponse(200, nil, nil), nil
	})
	disp, err := dispatch.NewDispatcher(dispatch.Config{Tenants: tenant.NewRegistry(d), Fetcher: dispatch.NewHandlerFetcher(nil), Stages: []dispatch.Stage{stage}})
	require.NoError(t, err)
	for _, p := range []string{"/t/p/free", "/t/p/rows/7", "/t/p/other"} {
		do(t, disp, "GET", "http://gw"+p, nil)
	}
	require.Equal(t, []string{"0//free", "0.002//rows/:id", "0.01/"}, got)
}

// Review finding: a tenant on the shared host cannot take the origin over
// in a browser (service workers scoped to "/", Clear-Site-Data), and no
// method override reaches a worker (it would run another route than the
// one priced).
func TestSharedOriginTakeoverAndMethodOverride(t *testing.T) {
	t.Parallel()
	worker := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Service-Worker-Allowed", "/")
		w.Header().Set("Clear-Site-Data", `"*"`)
		headerEcho(w, r)
	})
	d := newHardened(t, worker, nil)
	rec := do(t, d, "GET", "http://gw/t/free1/x", map[string]string{"X-HTTP-Method-Override": "GET", "X-Method-Override": "GET", "X-HTTP-Method": "GET"})
	h := received(t, rec)
	require.Empty(t, rec.Header().Get("Service-Worker-Allowed"))
	require.Empty(t, rec.Header().Get("Clear-Site-Data"))
	for _, k := range []string{"X-Http-Method-Override", "X-Method-Override", "X-Http-Method"} {
		require.Empty(t, h.Get(k), k)
	}
	rec = do(t, d, "GET", "http://gw/t/free1/sw.js", map[string]string{"Service-Worker": "script"})
	require.Equal(t, http.StatusForbidden, rec.Code)
	rec = do(t, d, "GET", "http://own.example/x", map[string]string{"Host": "own.example"})
	require.Equal(t, "/", rec.Header().Get("Service-Worker-Allowed"), "a tenant on its own host owns its origin")
	rec = do(t, d, "GET", "http://gw/t/free1/a//b", nil)
	require.Equal(t, http.StatusBadRequest, rec.Code, "servers merge //: it would be priced as one path and served as another")
}
