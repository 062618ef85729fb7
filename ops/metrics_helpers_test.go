package ops_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
)

// obsDirectory has three free tenants: alpha's worker answers 200, beta's
// 500, gamma's the status in the path (/t/gamma/299 answers 299).
const obsDirectory = `{"tenants":[
 {"slug":"alpha","workerName":"w-alpha"},
 {"slug":"beta","workerName":"w-beta"},
 {"slug":"gamma","workerName":"w-gamma"}]}`

// obsWorkers are the in-process workers of obsDirectory.
func obsWorkers() *dispatch.HandlerFetcher {
	return dispatch.NewHandlerFetcher(map[string]http.Handler{
		"w-alpha": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }),
		"w-beta":  http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) }),
		"w-gamma": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var code int
			_, _ = fmt.Sscanf(strings.TrimPrefix(r.URL.Path, "/"), "%d", &code)
			w.WriteHeader(code)
		}),
	})
}

// refuseStage refuses requests that carry X-Refuse with a rate limit.
var refuseStage = dispatch.StageFunc(func(ctx context.Context, x *dispatch.Exchange, next dispatch.Next) (*http.Response, error) {
	if x.Request.Header.Get("X-Refuse") != "" {
		return nil, dispatch.ErrRateLimited
	}
	return next(ctx, x)
})

// newObsDispatcher builds a dispatcher over obsDirectory.
func newObsDispatcher(t testing.TB, cfg dispatch.Config) *dispatch.Dispatcher {
	t.Helper()
	dir, err := tenant.ParseDirectory([]byte(obsDirectory))
	require.NoError(t, err)
	cfg.Tenants = tenant.NewRegistry(dir)
	if cfg.Fetcher == nil {
		cfg.Fetcher = obsWorkers()
	}
	d, err := dispatch.NewDispatcher(cfg)
	require.NoError(t, err)
	return d
}

// serve sends one request to h and returns the recorded answer.
func serve(h http.Handler, method, target string, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// scrape fetches h's text exposition and parses it into metric families.
func scrape(t testing.TB, h http.Handler, header ...string) map[string]*dto.MetricFamily {
	t.Helper()
	w := serve(h, http.MethodGet, "/metrics", header...)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.Contains(t, w.Header().Get("Content-Type"), "text/plain")
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(w.Body)
	require.NoError(t, err)
	return fams
}

// sample returns the metric of family name whose labels are exactly
// labels (name, value pairs), or nil.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
	for _, m := range f.GetMetric() {
		if len(m.GetLabel())*2 != len(labels) {
			continue
		}
		ok := true
		for i, l := range m.GetLabel() {
			if l.GetName() != labels[2*i] || l.GetValue() != labels[2*i+1] {
				ok = false
				break
			}
		}
		if ok {
			return m
		}
	}
	return nil
}

// counter returns the value of a counter sample, failing when it is absent.
func counter(t testing.TB, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	m := sample(fams, name, labels...)
	require.NotNil(t, m, "no sample %s%v", name, labels)
	return m.GetCounter().GetValue()
}

// histogram returns a histogram sample's count and sum.
func histogram(t testing.TB, fams map[string]*dto.MetricFamily, name string, labels ...string) (uint64, float64) {
	t.Helper()
	m := sample(fams, name, labels...)
	require.NotNil(t, m, "no sample %s%v", name, labels)
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

// fakeFacilitator answers with its Fn fields, or valid and settled.
type fakeFacilitator struct {
	VerifyFn func(context.Context, x402.FacilitatorRequest) (*x402.VerifyResponse, error)
	SettleFn func(context.Context, x402.FacilitatorRequest) (*x402.SettleResponse, error)
}

func (f *fakeFacilitator) Verify(ctx context.Context, req x402.FacilitatorRequest) (*x402.VerifyResponse, error) {
	if f.VerifyFn != nil {
		return f.VerifyFn(ctx, req)
	}
	return &x402.VerifyResponse{IsValid: true, Payer: "0xpayer"}, nil
}

func (f *fakeFacilitator) Settle(ctx context.Context, req x402.FacilitatorRequest) (*x402.SettleResponse, error) {
	if f.SettleFn != nil {
		return f.SettleFn(ctx, req)
	}
	return &x402.SettleResponse{Success: true, Transaction: "0xtx", Network: req.Requirement.Network}, nil
}

func (f *fakeFacilitator) Supported(context.Context) (*x402.SupportedResponse, error) {
	return &x402.SupportedResponse{}, nil
}
