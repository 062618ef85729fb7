package quota_test

import (
	"context"
	"encoding/json"
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

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/quota/quotatest"
	"github.com/402claw/dispatcher/tenant"
)

var (
	noon     = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	tomorrow = time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	nextMon  = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
)

func unix(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }

// gateway is a dispatcher over an in-process worker with the quota stages.
type gateway struct {
	srv     *httptest.Server
	l       *quota.Limiter
	calls   atomic.Int64 // worker calls
	mu      sync.Mutex
	cycles  map[string]dispatch.Lifecycle // request id -> lifecycle
	tenants map[string]*tenant.Tenant
}

// stages builds the pipeline from the limiter; nil means rate, usage.
type stagesFunc func(l *quota.Limiter) []dispatch.Stage

func newGateway(t *testing.T, cfg quota.Config, stages stagesFunc, tenants ...tenant.Tenant) *gateway {
	t.Helper()
	g := &gateway{cycles: map[string]dispatch.Lifecycle{}, tenants: map[string]*tenant.Tenant{}}
	if cfg.Now == nil {
		cfg.Now = quotatest.NewClock(noon).Now
	}
	l, err := quota.New(memory.NewKV(), cfg)
	require.NoError(t, err)
	g.l = l
	if stages == nil {
		stages = func(l *quota.Limiter) []dispatch.Stage {
			return []dispatch.Stage{l.Stage()}
		}
	}
	workers := map[string]http.Handler{}
	for _, tn := range tenants {
		tn.WorkerName = tn.Slug + "-worker"
		workers[tn.WorkerName] = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			g.calls.Add(1)
			if r.URL.Path == "/fail" {
				http.Error(w, "boom", http.StatusInternalServerError)
				return
			}
			_, _ = io.WriteString(w, "hello")
		})
	}
	list := make([]tenant.Tenant, len(tenants))
	for i, tn := range tenants {
		tn.WorkerName = tn.Slug + "-worker"
		list[i] = tn
	}
	dir, err := tenant.NewDirectory(list)
	require.NoError(t, err)
	for _, tn := range dir.Tenants() {
		tt, _ := dir.Lookup(tn.Slug)
		g.tenants[tn.Slug] = tt
	}
	d, err := dispatch.NewDispatcher(dispatch.Config{
		Tenants: tenant.NewRegistry(dir),
		Fetcher: dispatch.NewHandlerFetcher(workers),
		Stages:  stages(l),
		Events: dispatch.EventSinkFunc(func(e dispatch.Event) {
			if e.Type == dispatch.EventStart {
				return
			}
			g.mu.Lock()
			g.cycles[e.RequestID] = e.Exchange.Lifecycle
			g.mu.Unlock()
		}),
	})
	require.NoError(t, err)
	g.srv = httptest.NewServer(d)
	t.Cleanup(g.srv.Close)
	return g
}

type answer struct {
	status int
	header http.Header
	body   string
}

func (g *gateway) get(t *testing.T, path, caller string, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, g.srv.URL+path, nil)
	require.NoError(t, err)
	req.Header.Set("X-Agent-Id", caller)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := g.srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return answer{resp.StatusCode, resp.Header, string(b)}
}

func (g *gateway) lifecycle(rid string) dispatch.Lifecycle {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cycles[rid]
}

func errorBody(code, msg, rid string) string {
	b, _ := json.Marshal(dispatch.ErrorBody{Error: code, Message: msg, RequestID: rid})
	return string(b)
}

func acme() tenant.Tenant {
	return tenant.Tenant{
		Slug: "acme", Plan: "pro",
		RateLimit:  tenant.RateLimit{PerCaller: tenant.Rate{Requests: 3, WindowSeconds: 60}},
		UsageLimit: tenant.UsageLimit{DailyRequests: 10, MonthlyRequests: 100},
	}
}

func TestStagesHeadersOnEveryResponse(t *testing.T) {
	t.Parallel()
	g := newGateway(t, quota.Config{}, nil, acme(), tenant.Tenant{Slug: "plain", Plan: "pro"})

	a := g.get(t, "/t/acme/hello", "agent-1")
	require.Equal(t, http.StatusOK, a.status)
	require.Equal(t, "hello", a.body)
	want := map[string]string{
		"X-RateLimit-Limit":       "3",
		"X-RateLimit-Remaining":   "2",
		"X-RateLimit-Reset":       unix(noon.Add(20 * time.Second)),
		"X-Usage-Day-Limit":       "10",
		"X-Usage-Day-Remaining":   "9",
		"X-Usage-Day-Reset":       unix(tomorrow),
		"X-Usage-Month-Limit":     "100",
		"X-Usage-Month-Remaining": "99",
		"X-Usage-Month-Reset":     unix(nextMon),
		"X-Tenant-Id":             "acme",
	}
	for k, v := range want {
		require.Equal(t, v, a.header.Get(k), k)
	}
	require.Empty(t, a.header.Get("RateLimit-Policy"), "draft headers are off by default")
	require.Equal(t, dispatch.LifecycleServed, g.lifecycle(a.header.Get("X-Request-Id")))

	// A worker error is still a tenant response with the headers, and it
	// counts: the worker ran.
	a = g.get(t, "/t/acme/fail", "agent-1")
	require.Equal(t, http.StatusInternalServerError, a.status)
	require.Equal(t, "1", a.header.Get("X-RateLimit-Remaining"))
	require.Equal(t, "8", a.header.Get("X-Usage-Day-Remaining"))

	// A tenant with no quotas gets its plan's rate headers only (pro: 300/min).
	a = g.get(t, "/t/plain/x", "agent-1")
	require.Equal(t, http.StatusOK, a.status)
	require.Equal(t, "300", a.header.Get("X-RateLimit-Limit"))
	require.Equal(t, "299", a.header.Get("X-RateLimit-Remaining"))
	require.Empty(t, a.header.Get("X-Usage-Day-Limit"))
	require.Empty(t, a.header.Get("X-Usage-Month-Limit"))
}

func TestStagesRateLimited(t *testing.T) {
	t.Parallel()
	g := newGateway(t, quota.Config{}, nil, acme())
	for i := 0; i < 3; i++ {
		require.Equal(t, http.StatusOK, g.get(t, "/t/acme/hello", "agent-1").status)
	}
	a := g.get(t, "/t/acme/hello", "agent-1")
	rid := a.header.Get("X-Request-Id")
	require.Equal(t, http.StatusTooManyRequests, a.status)
	require.Equal(t, "application/json", a.header.Get("Content-Type"))
	require.JSONEq(t, errorBody("rate_limited", "rate limit of 3 requests per 60s per caller exceeded; retry after 20s", rid), a.body)
	require.Equal(t, "20", a.header.Get("Retry-After"))
	require.Equal(t, "3", a.header.Get("X-RateLimit-Limit"))
	require.Equal(t, "0", a.header.Get("X-RateLimit-Remaining"))
	require.Equal(t, unix(noon.Add(60*time.Second)), a.header.Get("X-RateLimit-Reset"))
	// The refused request consumed no quota, and the response still shows it.
	require.Equal(t, "7", a.header.Get("X-Usage-Day-Remaining"))
	require.Equal(t, "97", a.header.Get("X-Usage-Month-Remaining"))
	require.Equal(t, quota.LifecycleRateLimited, g.lifecycle(rid))
	require.Equal(t, int64(3), g.calls.Load())

	st, err := g.l.PeekUsage(context.Background(), g.tenants["acme"])
	require.NoError(t, err)
	require.Equal(t, int64(3), st.Day.Used)
	require.Equal(t, int64(3), st.Month.Used)

	// Other callers are not limited by agent-1's use.
	require.Equal(t, http.StatusOK, g.get(t, "/t/acme/hello", "agent-2").status)
}

func TestStagesUsageQuotaExceeded(t *testing.T) {
	t.Parallel()
	ten := acme()
	ten.RateLimit = tenant.RateLimit{}
	ten.UsageLimit = tenant.UsageLimit{DailyRequests: 2}
	g := newGateway(t, quota.Config{}, nil, ten)
	for i := 0; i < 2; i++ {
		a := g.get(t, "/t/acme/hello", fmt.Sprintf("agent-%d", i))
		require.Equal(t, http.StatusOK, a.status)
		require.Equal(t, strconv.Itoa(1-i), a.header.Get("X-Usage-Day-Remaining"))
	}
	a := g.get(t, "/t/acme/hello", "agent-9")
	rid := a.header.Get("X-Request-Id")
	require.Equal(t, http.StatusTooManyRequests, a.status)
	require.JSONEq(t, errorBody("usage_quota_exceeded", "daily usage quota of 2 requests exhausted (window 2026-11-24); retry after 43200s", rid), a.body)
	for k, v := range map[string]string{
		"X-Usage-Limit":         "2",
		"X-Usage-Remaining":     "0",
		"X-Usage-Reset":         unix(tomorrow),
		"X-Usage-Window":        "day",
		"Retry-After":           "43200",
		"X-Usage-Day-Limit":     "2",
		"X-Usage-Day-Remaining": "0",
		"X-RateLimit-Limit":     "300",
	} {
		require.Equal(t, v, a.header.Get(k), k)
	}
	require.Empty(t, a.header.Get("X-Usage-Month-Limit"))
	require.Equal(t, quota.LifecycleUsageQuotaExceeded, g.lifecycle(rid))
	require.Equal(t, int64(2), g.calls.Load())
}

// refuseAfterUsage stands for a later step that refuses a request before
// the worker runs.
var errRefused = fmt.Errorf("%w: test refusal", dispatch.ErrIdempotencyKeyInUse)

func TestStagesGiveBackWhenLaterStageRefuses(t *testing.T) {
	t.Parallel()
	ten := acme()
	ten.RateLimit = tenant.RateLimit{}
	ten.UsageLimit = tenant.UsageLimit{DailyRequests: 3, MonthlyRequests: 3}
	later := dispatch.StageFunc(func(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
		if x.Request.Header.Get("X-Refuse") != "" {
			return nil, errRefused
		}
		return next(ctx, x)
	})
	// A later stage that answers itself before the worker, as a 402
	// challenge does.
	challenge := dispatch.StageFunc(func(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
		if x.Request.Header.Get("X-Challenge") != "" {
			return dispatch.NewResponse(http.StatusPaymentRequired, nil, []byte("{}")), nil
		}
		return next(ctx, x)
	})
	g := newGateway(t, quota.Config{}, func(l *quota.Limiter) []dispatch.Stage {
		return []dispatch.Stage{l.Stage(), challenge, later}
	}, ten)

	for i := 0; i < 5; i++ {
		a := g.get(t, "/t/acme/hello", "agent-1", "X-Refuse", "1")
		require.Equal(t, http.StatusConflict, a.status)
		require.Equal(t, "3", a.header.Get("X-Usage-Day-Remaining"), "the unit was given back")
		require.Equal(t, "3", a.header.Get("X-Usage-Month-Remaining"))
		a = g.get(t, "/t/acme/hello", "agent-1", "X-Challenge", "1")
		require.Equal(t, http.StatusPaymentRequired, a.status)
		require.Equal(t, "3", a.header.Get("X-Usage-Day-Remaining"), "a challenge consumes nothing and still shows the quota")
	}
	st, err := g.l.PeekUsage(context.Background(), g.tenants["acme"])
	require.NoError(t, err)
	require.Equal(t, int64(0), st.Day.Used)
	require.Equal(t, int64(0), st.Month.Used)
	require.Equal(t, int64(0), g.calls.Load())

	for i := 0; i < 3; i++ {
		require.Equal(t, http.StatusOK, g.get(t, "/t/acme/hello", "agent-1").status)
	}
	a := g.get(t, "/t/acme/hello", "agent-1")
	require.Equal(t, http.StatusTooManyRequests, a.status)
	require.Equal(t, "month", a.header.Get("X-Usage-Window"), "both exhausted: the month binds")
	require.Equal(t, int64(3), g.calls.Load())
}

func TestStagesWorkerCalledExactlyN(t *testing.T) {
	t.Parallel()
	const n = 25
	ten := tenant.Tenant{Slug: "acme", Plan: "enterprise", UsageLimit: tenant.UsageLimit{DailyRequests: n, MonthlyRequests: 1000}}
	rated := tenant.Tenant{Slug: "rated", Plan: "free", RateLimit: tenant.RateLimit{PerCaller: tenant.Rate{Requests: n, WindowSeconds: 3600}}, UsageLimit: tenant.UsageLimit{DailyRequests: 1_000_000}}
	g := newGateway(t, quota.Config{}, nil, ten, rated)

	run := func(path string, caller func(i int) string) map[int]int {
		var mu sync.Mutex
		statuses := map[int]int{}
		var wg sync.WaitGroup
		var next atomic.Int64
		for w := 0; w < 32; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= 20*n {
						return
					}
					a := g.get(t, path, caller(i))
					mu.Lock()
					statuses[a.status]++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return statuses
	}

	// The usage quota over many callers.
	statuses := run("/t/acme/hello", func(i int) string { return fmt.Sprintf("agent-%d", i) })
	require.Equal(t, map[int]int{200: n, 429: 19 * n}, statuses)
	require.Equal(t, int64(n), g.calls.Load())

	// The rate limit of one caller: exactly n pass, and the refused ones
	// consume no quota.
	statuses = run("/t/rated/hello", func(int) string { return "one-agent" })
	require.Equal(t, map[int]int{200: n, 429: 19 * n}, statuses)
	require.Equal(t, int64(2*n), g.calls.Load())
	st, err := g.l.PeekUsage(context.Background(), g.tenants["rated"])
	require.NoError(t, err)
	require.Equal(t, int64(n), st.Day.Used)
}

func TestStagesDraftHeaders(t *testing.T) {
	t.Parallel()
	ten := acme()
	ten.RateLimit.Global = tenant.Rate{Requests: 100, WindowSeconds: 60}
	g := newGateway(t, quota.Config{DraftHeaders: true}, nil, ten)
	a := g.get(t, "/t/acme/hello", "agent-1")
	// The per-client-address limit stands beside the asserted identity:
	// five times the tenant's own per-caller rate.
	require.Equal(t, `"caller";q=3;w=60, "ip";q=15;w=60, "tenant";q=100;w=60`, a.header.Get("RateLimit-Policy"))
	require.Equal(t, `"caller";r=2;t=20, "ip";r=14;t=4, "tenant";r=99;t=1`, a.header.Get("RateLimit"))
	require.Equal(t, "2", a.header.Get("X-RateLimit-Remaining"), "the binding policy is the caller's")
}

func TestStagesSpendCap(t *testing.T) {
	t.Parallel()
	ten := tenant.Tenant{
		Slug: "paid", Plan: "pro", X402Enabled: true, PriceUSD: decimal.RequireFromString("0.01"),
		SpendLimit: tenant.SpendLimit{DailySpendUSD: decimal.RequireFromString("0.02"), MonthlySpendUSD: decimal.RequireFromString("1")},
	}
	g := newGateway(t, quota.Config{}, func(l *quota.Limiter) []dispatch.Stage {
		return []dispatch.Stage{l.Stage(), fakePay(l)}
	}, ten)

	a := g.get(t, "/t/paid/fail", "agent-1", "Payment-Signature", "sig")
	require.Equal(t, http.StatusInternalServerError, a.status)
	require.Equal(t, "0.02", a.header.Get("X-Spend-Day-Remaining"), "a failed request releases its price")
	require.Equal(t, "1", a.header.Get("X-Spend-Month-Remaining"))

	for _, want := range []string{"0.01", "0"} {
		a = g.get(t, "/t/paid/hello", "agent-1", "Payment-Signature", "sig")
		require.Equal(t, http.StatusOK, a.status)
		require.Equal(t, "0.02", a.header.Get("X-Spend-Day-Limit"))
		require.Equal(t, want, a.header.Get("X-Spend-Day-Remaining"))
		require.Equal(t, unix(tomorrow), a.header.Get("X-Spend-Day-Reset"))
		require.Equal(t, unix(nextMon), a.header.Get("X-Spend-Month-Reset"))
	}
	a = g.get(t, "/t/paid/hello", "agent-1", "Payment-Signature", "sig")
	rid := a.header.Get("X-Request-Id")
	require.Equal(t, http.StatusTooManyRequests, a.status)
	require.JSONEq(t, errorBody("spend_cap_exceeded", "daily spend cap of 0.02 USD reached (window 2026-11-24); retry after 43200s", rid), a.body)
	for k, v := range map[string]string{
		"X-Spend-Limit":           "0.02",
		"X-Spend-Remaining":       "0",
		"X-Spend-Reset":           unix(tomorrow),
		"X-Spend-Window":          "day",
		"Retry-After":             "43200",
		"X-Spend-Month-Remaining": "0.98",
	} {
		require.Equal(t, v, a.header.Get(k), k)
	}
	require.Equal(t, quota.LifecycleSpendCapExceeded, g.lifecycle(rid))
	require.Equal(t, int64(3), g.calls.Load())
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := quota.New(nil, quota.Config{})
	require.Error(t, err)
	_, err = quota.New(memory.NewKV(), quota.Config{Prefix: "a{b"})
	require.Error(t, err)
	_, err = quota.New(memory.NewKV(), quota.Config{Plans: map[string]quota.PlanRates{"Free": {}}})
	require.Error(t, err)
	_, err = quota.New(memory.NewKV(), quota.Config{Plans: map[string]quota.PlanRates{"free": {PerCaller: tenant.Rate{Requests: 5}}}})
	require.Error(t, err)
}

func TestRatesPlanDefaultsAndOverrides(t *testing.T) {
	t.Parallel()
	l, err := quota.New(memory.NewKV(), quota.Config{})
	require.NoError(t, err)
	perMin := func(n int64) tenant.Rate { return tenant.Rate{Requests: n, WindowSeconds: 60} }
	tests := []struct {
		plan        string
		own         tenant.RateLimit
		caller, all tenant.Rate
	}{
		{"free", tenant.RateLimit{}, perMin(60), perMin(600)},
		{"pro", tenant.RateLimit{}, perMin(300), perMin(3000)},
		{"business", tenant.RateLimit{}, perMin(1200), perMin(12000)},
		{"enterprise", tenant.RateLimit{}, perMin(6000), perMin(60000)},
		{"quarantine", tenant.RateLimit{}, perMin(10), perMin(60)},
		{"Enterprise", tenant.RateLimit{}, perMin(6000), perMin(60000)},
		{"unknown", tenant.RateLimit{}, perMin(60), perMin(600)},
		{"pro", tenant.RateLimit{PerCaller: tenant.Rate{Requests: 5, WindowSeconds: 1}}, tenant.Rate{Requests: 5, WindowSeconds: 1}, perMin(3000)},
		{"pro", tenant.RateLimit{Global: tenant.Rate{Requests: 7, WindowSeconds: 10}}, perMin(300), tenant.Rate{Requests: 7, WindowSeconds: 10}},
		{"pro", tenant.RateLimit{PerCaller: tenant.Rate{Requests: 5}}, perMin(300), perMin(3000)}, // incomplete: plan
	}
	for _, tc := range tests {
		c, a := l.Rates(&tenant.Tenant{Slug: "x", Plan: tc.plan, RateLimit: tc.own})
		require.Equal(t, tc.caller, c, "%s %+v", tc.plan, tc.own)
		require.Equal(t, tc.all, a, "%s %+v", tc.plan, tc.own)
	}
	// Custom plans: a zero rate turns the limit off, unknown plans use free.
	l, err = quota.New(memory.NewKV(), quota.Config{Plans: map[string]quota.PlanRates{"free": {PerCaller: perMin(1)}}})
	require.NoError(t, err)
	c, a := l.Rates(&tenant.Tenant{Plan: "pro"})
	require.Equal(t, perMin(1), c)
	require.True(t, a.IsZero())
}

// failingKV is a store whose counters fail, to check that a store outage
// fails requests instead of letting them through unlimited.
type failingKV struct {
	kv.Store
	IncrFn func(key string) error
}

func (f *failingKV) Incr(ctx context.Context, key string, in kv.Increment) (int64, bool, error) {
	if err := f.IncrFn(key); err != nil {
		return 0, false, err
	}
	return f.Store.Incr(ctx, key, in)
}

func TestStagesStoreFailure(t *testing.T) {
	t.Parallel()
	down := errors.New("store down")
	var failUsage atomic.Bool
	store := &failingKV{Store: memory.NewKV(), IncrFn: func(key string) error {
		if strings.Contains(key, ":rate:") && !failUsage.Load() {
			return down
		}
		if strings.Contains(key, ":use:") && failUsage.Load() {
			return down
		}
		return nil
	}}
	l, err := quota.New(store, quota.Config{Now: quotatest.NewClock(noon).Now})
	require.NoError(t, err)
	ten := acme()
	ten.RateLimit.Global = tenant.Rate{Requests: 10, WindowSeconds: 60}
	ten.UsageLimit = tenant.UsageLimit{DailyRequests: 10}
	ten.WorkerName = "w"
	_, err = l.Allow(context.Background(), &ten, "c")
	require.ErrorIs(t, err, down)
	require.ErrorIs(t, err, dispatch.ErrStoreUnavailable, "a store failure is 503 store_unavailable")
	var se *quota.StoreError
	require.True(t, errors.As(err, &se))
	require.Equal(t, "rate limit", se.Op)
	var le *quota.LimitError
	require.False(t, errors.As(err, &le))

	dir, err := tenant.NewDirectory([]tenant.Tenant{ten})
	require.NoError(t, err)
	var calls atomic.Int64
	d, err := dispatch.NewDispatcher(dispatch.Config{
		Tenants: tenant.NewRegistry(dir),
		Fetcher: dispatch.NewHandlerFetcher(map[string]http.Handler{"w": http.HandlerFunc(func(http.ResponseWriter, *http.Request) { calls.Add(1) })}),
		Stages:  []dispatch.Stage{l.Stage()},
	})
	require.NoError(t, err)
	for _, usage := range []bool{false, true} {
		failUsage.Store(usage)
		rec := httptest.NewRecorder()
		d.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/t/acme/x", nil))
		require.Equal(t, http.StatusServiceUnavailable, rec.Code)
		require.Contains(t, rec.Body.String(), `"error":"store_unavailable"`)
		require.Contains(t, rec.Body.String(), "nothing was charged")
		require.NotContains(t, rec.Body.String(), "store down", "internals do not leak")
		require.Empty(t, rec.Header().Get("X-Usage-Day-Limit"), "no made-up headers")
		if !usage {
			require.Empty(t, rec.Header().Get("X-RateLimit-Limit"))
		} else {
			require.Equal(t, "2", rec.Header().Get("X-RateLimit-Remaining"))
		}
	}
	require.Equal(t, int64(0), calls.Load())
}
