package dispatch_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/limits"
	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/tenant"
)

const dir = `{"tenants":[
 {"slug":"acme","workerName":"acme-w","plan":"pro","hosts":["acme.example.com"],"limits":{"subRequests":3}},
 {"slug":"slow","workerName":"slow-w","plan":"quarantine"},
 {"slug":"ghost","workerName":"missing-w"},
 {"slug":"boom","workerName":"panic-w"}
]}`

type recorded struct {
	mu     sync.Mutex
	events []dispatch.Event
}

func (r *recorded) Emit(e dispatch.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func newDispatcher(t *testing.T, mutate func(*dispatch.Config)) (*dispatch.Dispatcher, *recorded) {
	t.Helper()
	d, err := tenant.ParseDirectory([]byte(dir))
	require.NoError(t, err)
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"path": r.URL.Path, "raw": r.URL.EscapedPath(), "query": r.URL.RawQuery})
	})
	f := dispatch.NewHandlerFetcher(map[string]http.Handler{
		"acme-w": echo,
		"slow-w": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(5 * time.Second):
			case <-r.Context().Done():
			}
		}),
		"panic-w": http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("kaboom") }),
	})
	ev := &recorded{}
	cfg := dispatch.Config{Tenants: tenant.NewRegistry(d), Fetcher: f, Events: ev}
	if mutate != nil {
		mutate(&cfg)
	}
	disp, err := dispatch.NewDispatcher(cfg)
	require.NoError(t, err)
	return disp, ev
}

func do(t *testing.T, h http.Handler, method, target string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func errorBody(t *testing.T, rec *httptest.ResponseRecorder) dispatch.ErrorBody {
	t.Helper()
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var b dispatch.ErrorBody
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &b), rec.Body.String())
	require.False(t, b.OK)
	require.Equal(t, rec.Header().Get("X-Request-Id"), b.RequestID)
	require.NotEmpty(t, b.Message)
	return b
}

func TestRoutesByPathAndStripsPrefix(t *testing.T) {
	t.Parallel()
	d, _ := newDispatcher(t, nil)
	rec := do(t, d, "GET", "http://gw.local/t/acme/rows/a%20b?limit=5", nil)
	require.Equal(t, 200, rec.Code)
	var got map[string]string
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
	require.Equal(t, "/rows/a b", got["path"])
	require.Equal(t, "/rows/a%20b", got["raw"])
	require.Equal(t, "limit=5", got["query"])
	require.Equal(t, "acme", rec.Header().Get("X-Tenant-Id"))
	_, err := uuid.Parse(rec.Header().Get("X-Request-Id"))
	require.NoError(t, err)
}

func TestRoutesByHostFirst(t *testing.T) {
	t.Parallel()
	d, _ := newDispatcher(t, nil)
	rec := do(t, d, "GET", "http://x/t/slow/rows", map[string]string{"Host": "ACME.example.com:443"})
	require.Equal(t, 200, rec.Code)
	require.Contains(t, rec.Body.String(), `"path":"/t/slow/rows"`)
	require.Equal(t, "acme", rec.Header().Get("X-Tenant-Id"))
}

func TestErrorTable(t *testing.T) {
	t.Parallel()
	d, _ := newDispatcher(t, func(c *dispatch.Config) {
		c.WallClock = func(limits.Limits) time.Duration { return 50 * time.Millisecond }
	})
	cases := []struct {
		target string
		host   string
		status int
		code   string
		tenant string
	}{
		{"/t/nobody/x", "gw", 404, "tenant_not_found", ""},
		{"/elsewhere", "gw", 404, "tenant_not_found", ""},
		{"/t/Bad_Slug/x", "gw", 400, "bad_request", ""},
		{"/t/acme/../x", "gw", 400, "bad_request", ""},
		{"/t/acme/x", strings.Repeat("h", 300), 400, "bad_request", ""},
		{"/t/acme/x", "bad host!", 400, "bad_request", ""},
		{"/t/ghost/x", "gw", 404, "worker_not_found", "ghost"},
		{"/t/slow/x", "gw", 504, "worker_timeout", "slow"},
		{"/t/boom/x", "gw", 502, "tenant_worker_failure", "boom"},
	}
	for _, tc := range cases {
		rec := do(t, d, "GET", "http://gw"+tc.target, map[string]string{"Host": tc.host})
		require.Equal(t, tc.status, rec.Code, tc.target)
		b := errorBody(t, rec)
		require.Equal(t, tc.code, b.Error, tc.target)
		require.Equal(t, tc.tenant, rec.Header().Get("X-Tenant-Id"))
		require.NotEmpty(t, rec.Header().Get("X-Request-Id"))
	}
}

func TestStatusOfEveryCode(t *testing.T) {
	t.Parallel()
	want := map[*dispatch.Error]int{
		dispatch.ErrBadRequest: 400, dispatch.ErrInvalidPayment: 400, dispatch.ErrUnauthorized: 401,
		dispatch.ErrTenantNotFound: 404, dispatch.ErrWorkerNotFound: 404, dispatch.ErrIdempotencyKeyInUse: 409,
		dispatch.ErrIdempotencyKeyReused: 422, dispatch.ErrRateLimited: 429, dispatch.ErrUsageQuotaExceeded: 429,
		dispatch.ErrSpendCapExceeded: 429, dispatch.ErrWorkerFailure: 502, dispatch.ErrFacilitatorUnavailable: 502,
		dispatch.ErrWorkerLimitExceeded: 503, dispatch.ErrWorkerTimeout: 504,
	}
	for e, status := range want {
		got, code := dispatch.StatusOf(fmt.Errorf("context: %w", e))
		require.Equal(t, status, got, e.Code)
		require.Equal(t, e.Code, code)
	}
	got, code := dispatch.StatusOf(errors.New("plain"))
	require.Equal(t, 500, got)
	require.Equal(t, "internal_error", code)
	resp := dispatch.ErrorResponse(errors.New("secret db password"), "rid")
	body, _ := io.ReadAll(resp.Body)
	require.NotContains(t, string(body), "secret", "internal errors are not leaked")
}

// overBudget makes subrequests through the outbound client.
func TestSubrequestBudgetIsExact(t *testing.T) {
	t.Parallel()
	var upstreamHits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { upstreamHits.Add(1) }))
	defer up.Close()
	calls := func(n int) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := dispatch.OutboundClient(r.Context(), up.Client().Transport)
			for i := 0; i < n; i++ {
				resp, err := c.Get(up.URL)
				if err != nil {
					require.ErrorIs(t, err, dispatch.ErrSubrequestLimit)
					w.WriteHeader(500)
					return
				}
				resp.Body.Close()
			}
			fmt.Fprint(w, "ok")
		})
	}
	d, _ := newDispatcher(t, func(c *dispatch.Config) {
		c.Fetcher = dispatch.NewHandlerFetcher(map[string]http.Handler{"acme-w": calls(3)})
	})
	rec := do(t, d, "GET", "http://gw/t/acme/x", nil)
	require.Equal(t, 200, rec.Code, "3 subrequests fit a limit of 3")
	require.Equal(t, int64(3), upstreamHits.Load())

	d, _ = newDispatcher(t, func(c *dispatch.Config) {
		c.Fetcher = dispatch.NewHandlerFetcher(map[string]http.Handler{"acme-w": calls(4)})
	})
	rec = do(t, d, "GET", "http://gw/t/acme/x", nil)
	require.Equal(t, 503, rec.Code)
	require.Equal(t, "worker_limit_exceeded", errorBody(t, rec).Error)
	require.Equal(t, int64(6), upstreamHits.Load(), "request 4 was never sent")
}

func TestBudgetConcurrentExact(t *testing.T) {
	t.Parallel()
	b := dispatch.NewBudget(37)
	var ok atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				if b.Take() {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	require.Equal(t, int64(37), ok.Load())
	require.True(t, b.Exceeded())
	require.Equal(t, 37, b.Used())
	_, err := dispatch.OutboundClient(context.Background(), nil).Get("http://127.0.0.1:1/")
	require.ErrorIs(t, err, dispatch.ErrSubrequestLimit, "no budget in context: nothing goes out")
}

func TestStagesRunInOrderAndMayAnswer(t *testing.T) {
	t.Parallel()
	var order []string
	var mu sync.Mutex
	mark := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
	stage := func(name string) dispatch.Stage {
		return dispatch.StageFunc(func(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
			mark(name + ">")
			x.Header.Set("X-Stage-"+name, "1")
			resp, err := next(ctx, x)
			mark("<" + name)
			return resp, err
		})
	}
	refuse := dispatch.StageFunc(func(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
		if x.Request.Header.Get("X-Refuse") != "" {
			h := http.Header{}
			h.Set("Retry-After", "7")
			e := dispatch.ErrRateLimited.With("slow down", nil)
			e.Header = h
			return nil, e
		}
		return next(ctx, x)
	})
	d, ev := newDispatcher(t, func(c *dispatch.Config) { c.Stages = []dispatch.Stage{stage("a"), refuse, stage("b")} })
	rec := do(t, d, "GET", "http://gw/t/acme/x", nil)
	require.Equal(t, 200, rec.Code)
	require.Equal(t, []string{"a>", "b>", "<b", "<a"}, order)
	require.Equal(t, "1", rec.Header().Get("X-Stage-a"))
	require.Equal(t, "1", rec.Header().Get("X-Stage-b"))

	rec = do(t, d, "GET", "http://gw/t/acme/x", map[string]string{"X-Refuse": "1"})
	require.Equal(t, 429, rec.Code)
	require.Equal(t, "7", rec.Header().Get("Retry-After"))
	require.Equal(t, "1", rec.Header().Get("X-Stage-a"), "headers set before the refusal stay")
	require.Equal(t, "rate_limited", errorBody(t, rec).Error)

	ev.mu.Lock()
	defer ev.mu.Unlock()
	require.Len(t, ev.events, 4)
	require.Equal(t, dispatch.EventStart, ev.events[0].Type)
	require.Equal(t, dispatch.EventSuccess, ev.events[1].Type)
	require.Equal(t, 200, ev.events[1].Status)
	require.Equal(t, dispatch.LifecycleServed, ev.events[1].Exchange.Lifecycle)
	require.Equal(t, dispatch.EventFailure, ev.events[3].Type)
	require.Equal(t, "rate_limited", ev.events[3].Code)
	require.Equal(t, dispatch.LifecycleRateLimited, ev.events[3].Exchange.Lifecycle)
	require.False(t, ev.events[3].Exchange.WorkerCalled)
	require.Equal(t, "acme-w", ev.events[1].Worker)
	require.Equal(t, "pro", ev.events[1].Plan)
	require.Equal(t, limits.Limits{CPUMs: 200, SubRequests: 3}, ev.events[1].Limits)
}

func TestPlatformRoutesNeverReachTenants(t *testing.T) {
	t.Parallel()
	d, _ := newDispatcher(t, nil)
	rec := do(t, d, "GET", "http://acme.example.com/__platform/health", map[string]string{"Host": "acme.example.com"})
	require.Equal(t, 404, rec.Code)
	require.Empty(t, rec.Header().Get("X-Tenant-Id"))
	d, _ = newDispatcher(t, func(c *dispatch.Config) {
		c.Platform = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"ok":true}`) })
	})
	rec = do(t, d, "GET", "http://acme.example.com/__platform/health", map[string]string{"Host": "acme.example.com"})
	require.Equal(t, 200, rec.Code)
	require.Equal(t, `{"ok":true}`, rec.Body.String())
	require.NotEmpty(t, rec.Header().Get("X-Request-Id"))
}

func TestRequestIDKeptOnlyWhenValidAndAllowed(t *testing.T) {
	t.Parallel()
	in := uuid.NewString()
	d, _ := newDispatcher(t, nil)
	rec := do(t, d, "GET", "http://gw/t/acme/x", map[string]string{"X-Request-Id": in})
	require.NotEqual(t, in, rec.Header().Get("X-Request-Id"))
	d, _ = newDispatcher(t, func(c *dispatch.Config) { c.KeepRequestID = true })
	rec = do(t, d, "GET", "http://gw/t/acme/x", map[string]string{"X-Request-Id": in})
	require.Equal(t, in, rec.Header().Get("X-Request-Id"))
	rec = do(t, d, "GET", "http://gw/t/acme/x", map[string]string{"X-Request-Id": "<script>"})
	_, err := uuid.Parse(rec.Header().Get("X-Request-Id"))
	require.NoError(t, err)
	require.NotEqual(t, "<script>", rec.Header().Get("X-Request-Id"))
}

func TestIdentityOrder(t *testing.T) {
	t.Parallel()
	mk := func(remote string, h map[string]string) *http.Request {
		r := httptest.NewRequest("GET", "http://gw/", nil)
		r.RemoteAddr = remote
		for k, v := range h {
			r.Header.Set(k, v)
		}
		return r
	}
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	all := map[string]string{"X-Agent-Id": "bot-1", "X-Caller-Id": "c", "X-Api-Key": "k", "X-Forwarded-For": "1.2.3.4"}
	require.Equal(t, "agent:bot-1", dispatch.Identity(mk("9.9.9.9:1", all), nil))
	delete(all, "X-Agent-Id")
	require.Equal(t, "caller:c", dispatch.Identity(mk("9.9.9.9:1", all), nil))
	delete(all, "X-Caller-Id")
	id := dispatch.Identity(mk("9.9.9.9:1", all), nil)
	require.True(t, strings.HasPrefix(id, "key:"))
	require.NotContains(t, id, ":k", "the raw key never appears")
	delete(all, "X-Api-Key")
	require.Equal(t, "ip:9.9.9.9", dispatch.Identity(mk("9.9.9.9:1", all), nil), "untrusted peer: XFF ignored")
	require.Equal(t, "ip:1.2.3.4", dispatch.Identity(mk("10.1.1.1:1", all), trusted))
	require.Equal(t, "ip:1.2.3.4", dispatch.Identity(mk("10.1.1.1:1", map[string]string{"X-Forwarded-For": "6.6.6.6, 1.2.3.4, 10.0.0.9"}), trusted))
	require.Equal(t, "ip:10.1.1.1", dispatch.Identity(mk("10.1.1.1:1", map[string]string{"X-Forwarded-For": "garbage"}), trusted))
	require.Equal(t, "anonymous", dispatch.Identity(mk("", nil), nil))
	require.Equal(t, metrics.HashCaller("agent:bot-1"), dispatch.HashCaller("agent:bot-1"))
}

func TestDirectorySwapWhileServing(t *testing.T) {
	t.Parallel()
	reg := tenant.NewRegistry(nil)
	d, err := dispatch.NewDispatcher(dispatch.Config{Tenants: reg, Fetcher: dispatch.NewHandlerFetcher(map[string]http.Handler{
		"w": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hi") }),
	})})
	require.NoError(t, err)
	require.Equal(t, 404, do(t, d, "GET", "http://gw/t/a/", nil).Code)
	_, err = reg.Replace([]byte(`{"tenants":[{"slug":"a","workerName":"w"}]}`))
	require.NoError(t, err)
	require.Equal(t, 200, do(t, d, "GET", "http://gw/t/a/", nil).Code)
}

func TestNewDispatcherValidates(t *testing.T) {
	t.Parallel()
	_, err := dispatch.NewDispatcher(dispatch.Config{})
	require.Error(t, err)
	_, err = dispatch.NewDispatcher(dispatch.Config{Tenants: tenant.NewRegistry(nil)})
	require.Error(t, err)
	_, err = dispatch.NewDispatcher(dispatch.Config{Tenants: tenant.NewRegistry(nil), Fetcher: dispatch.NewHandlerFetcher(nil), Stages: []dispatch.Stage{nil}})
	require.Error(t, err)
}

func TestHeadRequestsHaveNoBody(t *testing.T) {
	t.Parallel()
	d, _ := newDispatcher(t, nil)
	rec := do(t, d, "HEAD", "http://gw/t/acme/x", nil)
	require.Equal(t, 200, rec.Code)
	require.Empty(t, rec.Body.String())
}

type usageRec struct {
	mu sync.Mutex
	ev []metrics.UsageEvent
}

func (u *usageRec) Emit(e metrics.UsageEvent) { u.mu.Lock(); u.ev = append(u.ev, e); u.mu.Unlock() }

func TestOneUsageEventPerRequest(t *testing.T) {
	t.Parallel()
	u := &usageRec{}
	d, _ := newDispatcher(t, func(c *dispatch.Config) { c.Events = metrics.UsageSink(u) })
	do(t, d, "GET", "http://gw/t/acme/rows?x=1", map[string]string{"X-Agent-Id": "bot"})
	do(t, d, "GET", "http://gw/t/ghost/rows", nil)
	do(t, d, "GET", "http://gw/t/nobody/rows", nil)
	u.mu.Lock()
	defer u.mu.Unlock()
	require.Len(t, u.ev, 2, "one per tenant request; unknown tenants have none")
	ok, fail := u.ev[0], u.ev[1]
	require.Equal(t, "acme", ok.APIID)
	require.Equal(t, "/rows", ok.Endpoint)
	require.Equal(t, 200, ok.Status)
	require.Equal(t, metrics.LifecycleServed, ok.Lifecycle)
	require.Equal(t, dispatch.HashCaller("agent:bot"), ok.CallerID)
	require.NotContains(t, ok.CallerID, "bot")
	require.Equal(t, 404, fail.Status)
	require.Equal(t, metrics.Lifecycle("worker_error"), fail.Lifecycle)
	_, err := metrics.NormalizeUsageEvent(ok)
	require.NoError(t, err)
}

// ownerStage is a stage that declares the response headers it owns.
type ownerStage struct {
	dispatch.StageFunc
	owned []string
}

func (s ownerStage) OwnedHeaders() []string { return s.owned }

func TestWorkerCannotForgeGatewayHeaders(t *testing.T) {
	t.Parallel()
	limitStage := ownerStage{StageFunc: func(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
		x.Header.Set("X-RateLimit-Remaining", "4")
		return next(ctx, x)
	}, owned: []string{"X-Ratelimit-", "X-Usage-", "X-Payment-", "Payment-Response"}}
	d, _ := newDispatcher(t, func(c *dispatch.Config) {
		c.Stages = []dispatch.Stage{limitStage}
		c.Fetcher = dispatch.NewHandlerFetcher(map[string]http.Handler{"acme-w": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-RateLimit-Remaining", "999999")
			w.Header().Set("X-Usage-Day-Remaining", "999999")
			w.Header().Set("X-Payment-Deduped", "true")
			w.Header().Set("PAYMENT-RESPONSE", "forged")
			w.Header().Set("X-Tenant-Id", "someone-else")
			w.Header().Set("X-Worker-Own", "kept")
		})})
	})
	rec := do(t, d, "GET", "http://gw/t/acme/x", nil)
	require.Equal(t, 200, rec.Code)
	require.Equal(t, "4", rec.Header().Get("X-RateLimit-Remaining"))
	require.Empty(t, rec.Header().Get("X-Usage-Day-Remaining"))
	require.Empty(t, rec.Header().Get("X-Payment-Deduped"))
	require.Empty(t, rec.Header().Get("PAYMENT-RESPONSE"))
	require.Equal(t, "acme", rec.Header().Get("X-Tenant-Id"))
	require.Equal(t, "kept", rec.Header().Get("X-Worker-Own"))
}

func TestServerErrorsDoNotLeakInternals(t *testing.T) {
	t.Parallel()
	d, _ := newDispatcher(t, func(c *dispatch.Config) {
		c.Fetcher = fetcherFunc(func(context.Context, *http.Request, *dispatch.Payload) (*http.Response, error) {
			return nil, fmt.Errorf("%w: dial tcp 10.1.2.3:8080: connection refused", dispatch.ErrWorkerFailure)
		})
	})
	rec := do(t, d, "GET", "http://gw/t/acme/x", nil)
	require.Equal(t, 502, rec.Code)
	b := errorBody(t, rec)
	require.Equal(t, dispatch.ErrWorkerFailure.Message, b.Message)
	require.NotContains(t, rec.Body.String(), "10.1.2.3")
}

type fetcherFunc func(context.Context, *http.Request, *dispatch.Payload) (*http.Response, error)

func (f fetcherFunc) Fetch(ctx context.Context, r *http.Request, p *dispatch.Payload) (*http.Response, error) {
	return f(ctx, r, p)
}
