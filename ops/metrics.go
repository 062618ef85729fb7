package ops

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/shopspring/decimal"
)

// Metric names (DESIGN section 17). They are part of the contract:
// dashboards and alerts are written against them.
const (
	MetricRequests            = "dispatcher_requests_total"
	MetricRequestDuration     = "dispatcher_request_duration_seconds"
	MetricSettlements         = "dispatcher_settlements_total"
	MetricSettledUSD          = "dispatcher_settled_usd_total"
	MetricFacilitatorDuration = "dispatcher_facilitator_duration_seconds"
	MetricStoreDuration       = "dispatcher_store_duration_seconds"
	MetricEventsDropped       = "dispatcher_events_dropped_total"
)

// DefaultDurationBuckets are the histogram buckets, in seconds, of every
// duration metric unless MetricsConfig.DurationBuckets says otherwise: from
// half a millisecond (a memory store) to a minute (the longest worker
// budget).
var DefaultDurationBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// DefaultMaxTenants is the default bound on the tenant label's values.
const DefaultMaxTenants = 10000

// MetricsConfig configures Metrics. The zero value is valid: no token,
// default buckets, at most DefaultMaxTenants tenant label values.
type MetricsConfig struct {
	// Token, when set, is the bearer token the /metrics handler requires
	// (Authorization: Bearer <token>); other requests get 401.
	Token string
	// DurationBuckets are the upper bounds, in seconds and increasing, of
	// the duration histograms (nil: DefaultDurationBuckets).
	DurationBuckets []float64
	// MaxTenants bounds the distinct values of the tenant label (0:
	// DefaultMaxTenants). Tenant slugs come from the directory, so the
	// bound is only reached by a directory that churns through many
	// tenants; past it, new tenants are counted under "other".
	MaxTenants int
	// RuntimeMetrics adds the Go runtime and process collectors (go_*,
	// process_*) to the registry.
	RuntimeMetrics bool
	// Now is the clock the wrappers time calls with (nil: time.Now).
	Now func() time.Time
}

// Metrics holds the dispatcher's Prometheus metrics in a registry of its
// own: the library never touches prometheus.DefaultRegisterer, so an
// embedding program keeps control of its global registry and two Metrics
// never collide. It is fed by small hooks (Sink, Facilitator, KVStore,
// LedgerStore, Settlement, CountDropped) and served by Handler. It is safe
// for concurrent use.
type Metrics struct {
	reg   *prometheus.Registry
	token string
	now   func() time.Time

	requests    *prometheus.CounterVec
	duration    prometheus.Histogram
	settlements *prometheus.CounterVec
	facilitator *prometheus.HistogramVec
	store       *prometheus.HistogramVec
	settled     *usdCounter
	dropped     atomic.Pointer[func() uint64]

	tenants, lifecycles, schemes, settleStatuses *labelSet

	// reqCounters caches the counter of each label triple, so the request
	// path does not hash the labels on every request.
	reqCounters sync.Map // reqKey -> prometheus.Counter
}

type reqKey struct{ tenant, lifecycle, status string }

// NewMetrics builds the metrics and registers them in a new registry.
func NewMetrics(cfg MetricsConfig) (*Metrics, error) {
	buckets := cfg.DurationBuckets
	if buckets == nil {
		buckets = DefaultDurationBuckets
	}
	if len(buckets) == 0 {
		return nil, errors.New("ops: MetricsConfig.DurationBuckets is empty")
	}
	for i := 1; i < len(buckets); i++ {
		if !(buckets[i] > buckets[i-1]) {
			return nil, fmt.Errorf("ops: MetricsConfig.DurationBuckets must increase; %v follows %v", buckets[i], buckets[i-1])
		}
	}
	if cfg.MaxTenants < 0 {
		return nil, fmt.Errorf("ops: MetricsConfig.MaxTenants is negative (%d)", cfg.MaxTenants)
	}
	if cfg.MaxTenants == 0 {
		cfg.MaxTenants = DefaultMaxTenants
	}
	if strings.ContainsAny(cfg.Token, " \t\r\n") {
		return nil, errors.New("ops: MetricsConfig.Token contains white space")
	}
	m := &Metrics{
		reg:   prometheus.NewRegistry(),
		token: cfg.Token,
		now:   cfg.Now,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRequests,
			Help: "Tenant requests answered, by tenant, analytics lifecycle and HTTP status.",
		}, []string{"tenant", "lifecycle", "status"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    MetricRequestDuration,
			Help:    "Time from a tenant request's arrival to its answer, in seconds.",
			Buckets: buckets,
		}),
		settlements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricSettlements,
			Help: "Settlements attempted, by tenant, payment scheme and outcome (settled, pending, failed).",
		}, []string{"tenant", "scheme", "status"}),
		facilitator: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricFacilitatorDuration,
			Help:    "Duration of facilitator calls, in seconds, by operation (verify, settle, supported).",
			Buckets: buckets,
		}, []string{"op"}),
		store: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricStoreDuration,
			Help:    "Duration of KV and ledger store calls, in seconds, by operation.",
			Buckets: buckets,
		}, []string{"op"}),
		settled: newUSDCounter(prometheus.NewDesc(MetricSettledUSD,
			"USD settled (status settled), by tenant.", []string{"tenant"}, nil)),
		tenants:        newLabelSet(nil, cfg.MaxTenants, 128, nil),
		lifecycles:     newLabelSet(knownLifecycles, 16, 64, isLabelToken),
		schemes:        newLabelSet(knownSchemes, 16, 64, isLabelToken),
		settleStatuses: newLabelSet(knownSettlementStatuses, 8, 32, isLabelToken),
	}
	if m.now == nil {
		m.now = time.Now
	}
	dropped := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: MetricEventsDropped,
		Help: "Usage events dropped because the event sink's buffer was full.",
	}, func() float64 {
		if fn := m.dropped.Load(); fn != nil {
			return float64((*fn)())
		}
		return 0
	})
	cs := []prometheus.Collector{m.requests, m.duration, m.settlements, m.facilitator, m.store, m.settled, dropped}
	if cfg.RuntimeMetrics {
		cs = append(cs, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return nil, fmt.Errorf("ops: registering metrics: %w", err)
		}
	}
	// Every operation's series exists from the start, at zero, so a
	// dashboard sees "no calls" rather than "no data".
	for _, op := range facilitatorOps {
		m.facilitator.WithLabelValues(op)
	}
	for _, op := range storeOps {
		m.store.WithLabelValues(op)
	}
	return m, nil
}

// Registry returns the registry the metrics live in, for a program that
// adds metrics of its own to the same /metrics page.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// CountDropped makes dispatcher_events_dropped_total report fn(), the
// number of usage events dropped so far (metrics.AsyncSink.Dropped). A
// later call replaces fn; nil reports 0. fn is called at every scrape and
// must be safe for concurrent use.
func (m *Metrics) CountDropped(fn func() uint64) {
	if fn == nil {
		m.dropped.Store(nil)
		return
	}
	m.dropped.Store(&fn)
}

// Settlement counts one settlement attempt of a tenant's payment: scheme
// is the payment scheme ("exact", "upto", ...), status the outcome
// ("settled", "pending", "failed"), usd the amount charged. Only a
// "settled" outcome adds usd to dispatcher_settled_usd_total (a pending one
// may or may not have moved money); a negative amount is not added. The
// sum is kept as an exact decimal and converted to a float only when
// scraped.
func (m *Metrics) Settlement(tenant, scheme, status string, usd decimal.Decimal) {
	t := m.tenants.value(tenant)
	st := m.settleStatuses.value(status)
	m.settlements.WithLabelValues(t, m.schemes.value(scheme), st).Inc()
	if st == "settled" && usd.Sign() > 0 {
		m.settled.add(t, usd)
	}
}

// request counts one answered tenant request.
func (m *Metrics) request(tenant, lifecycle string, status int, d time.Duration) {
	k := reqKey{m.tenants.value(tenant), m.lifecycles.value(lifecycle), statusLabel(status)}
	c, ok := m.reqCounters.Load(k)
	if !ok {
		c, _ = m.reqCounters.LoadOrStore(k, m.requests.WithLabelValues(k.tenant, k.lifecycle, k.status))
	}
	c.(prometheus.Counter).Inc()
	if d >= 0 {
		m.duration.Observe(d.Seconds())
	}
}

// Handler serves the metrics in the Prometheus text format (or
// OpenMetrics, when the scraper asks for it). With a Token configured, a
// request without "Authorization: Bearer <token>" is answered 401 with a
// JSON error body and a WWW-Authenticate challenge.
func (m *Metrics) Handler() http.Handler {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      m.reg, // counts the handler's own errors
	})
	if m.token == "" {
		return h
	}
	want := []byte(m.token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := metricsBearerToken(r.Header.Get("Authorization"))
		if !ok || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"ok":false,"error":"unauthorized","message":"the metrics need Authorization: Bearer <metrics token>"}` + "\n"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// metricsBearerToken reads the token of an "Authorization: Bearer <token>"
// header value. The scheme is case-insensitive (RFC 9110 section 11.1);
// the token is everything after the white space that follows it, and must
// be non-empty and contain no white space.
func metricsBearerToken(h string) (string, bool) {
	const scheme = "bearer"
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	rest := h[len(scheme):]
	if rest[0] != ' ' && rest[0] != '\t' {
		return "", false
	}
	tok := strings.TrimLeft(rest, " \t")
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return "", false
	}
	return tok, true
}

// usdCounter is dispatcher_settled_usd_total: an exact decimal sum per
// tenant, exposed as a counter. A float counter would drift after millions
// of sub-cent additions; this one is exact until the scrape converts it.
type usdCounter struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	sums map[string]decimal.Decimal
}

func newUSDCounter(desc *prometheus.Desc) *usdCounter {
	return &usdCounter{desc: desc, sums: make(map[string]decimal.Decimal)}
}

func (c *usdCounter) add(tenant string, usd decimal.Decimal) {
	c.mu.Lock()
	c.sums[tenant] = c.sums[tenant].Add(usd)
	c.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (c *usdCounter) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *usdCounter) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	ms := make([]prometheus.Metric, 0, len(c.sums))
	for t, v := range c.sums {
		ms = append(ms, prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, v.InexactFloat64(), t))
	}
	c.mu.Unlock()
	for _, m := range ms {
		ch <- m
	}
}
