package replicas_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/postgres"
	"github.com/402claw/dispatcher/adapters/redis"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/payment"
)

// serviceURL returns the environment variable, skipping the test when it is
// unset, except under CI=true where a missing service fails the run.
func serviceURL(t testing.TB, name string) string {
	t.Helper()
	u := os.Getenv(name)
	if u == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set; it is required when CI=true", name)
		}
		t.Skipf("%s is not set; skipping the multi-replica tests", name)
	}
	return u
}

const payTo = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"

// directoryJSON is the tenant directory every replica serves. Rate limits
// are set high so that only the limit under test binds.
func directoryJSON(dailyRequests int, dailySpendUSD string) string {
	rate := `"rateLimit":{"perCaller":{"requests":1000000,"windowSeconds":60},"global":{"requests":1000000,"windowSeconds":60}}`
	return `{"tenants":[
		{"slug":"quota","workerName":"echo","plan":"enterprise","usageLimit":{"dailyRequests":` + strconv.Itoa(dailyRequests) + `},` + rate + `},
		{"slug":"capped","workerName":"echo","plan":"enterprise","priceUsd":"0.01","x402Enabled":true,"ownerUserId":"owner-1",
		 "spendLimit":{"dailySpendUsd":"` + dailySpendUSD + `"},` + rate + `},
		{"slug":"paid","workerName":"echo","plan":"enterprise","priceUsd":"0.01","x402Enabled":true,"ownerUserId":"owner-1",` + rate + `},
		{"slug":"full","workerName":"echo","plan":"enterprise","priceUsd":"0.01","x402Enabled":true,"ownerUserId":"owner-1",
		 "usageLimit":{"dailyRequests":` + strconv.Itoa(dailyRequests) + `,"monthlyRequests":1000000},
		 "spendLimit":{"dailySpendUsd":"1000","monthlySpendUsd":"10000"},` + rate + `}
	]}`
}

// clusterConfig says how to build a cluster.
type clusterConfig struct {
	replicas      int
	dailyRequests int
	dailySpendUSD string
	// redisAddr and pgAddr, when set, replace the services' addresses (a
	// proxy in front of them).
	redisAddr, pgAddr string
	// redisHook is added to every replica's Redis client.
	redisHook goredis.Hook
	// events keeps usage events in PostgreSQL through an async sink.
	events bool
	// instant replaces the local facilitator with a double that answers
	// at once, so that a benchmark measures the gateways and the stores,
	// not signature recovery.
	instant bool
}

// cluster is n replicas over one Redis key prefix and one PostgreSQL schema.
type cluster struct {
	replicas []*replica
	schema   string
	prefix   string
	// store is a PostgreSQL store over a pool of its own, straight to the
	// server, for the test's reads.
	store *postgres.Store
	rdb   *goredis.Client // straight to the server
	// settles counts calls of the facilitator's Settle across replicas.
	settles, settleOK atomic.Int64
	workerCalls       atomic.Int64
	// gate, when set, holds every worker call until it is closed.
	gate atomic.Pointer[chan struct{}]
	log  *logRecorder
	dir  *tenant.Directory
}

type replica struct {
	handler http.Handler
	pay     *payment.Stage
	sink    *metrics.AsyncSink
	rdb     *goredis.Client
	pool    *pgxpool.Pool
}

// newCluster builds the replicas. Cleanup closes everything and drops the
// schema and the keys.
func newCluster(t testing.TB, cfg clusterConfig) *cluster {
	t.Helper()
	redisURL := serviceURL(t, "TEST_REDIS_URL")
	dbURL := serviceURL(t, "TEST_DATABASE_URL")
	if cfg.replicas == 0 {
		cfg.replicas = 2
	}
	if cfg.dailyRequests == 0 {
		cfg.dailyRequests = 100
	}
	if cfg.dailySpendUSD == "" {
		cfg.dailySpendUSD = "0.05"
	}
	ctx := context.Background()
	var b [6]byte
	_, _ = rand.Read(b[:])
	c := &cluster{
		schema: "replicas_" + hex.EncodeToString(b[:]),
		prefix: "replicas:" + uuid.NewString() + ":",
		log:    &logRecorder{},
	}
	dir, err := tenant.ParseDirectory([]byte(directoryJSON(cfg.dailyRequests, cfg.dailySpendUSD)))
	require.NoError(t, err)
	c.dir = dir

	// The test's own connections, straight to the services.
	ropts, err := goredis.ParseURL(redisURL)
	require.NoError(t, err)
	c.rdb = goredis.NewClient(ropts)
	require.NoError(t, c.rdb.Ping(ctx).Err(), "Redis at TEST_REDIS_URL does not answer")
	direct := newPool(t, dbURL, "", 4)
	c.store, err = postgres.New(ctx, direct, postgres.Config{Schema: c.schema})
	require.NoError(t, err)
	t.Cleanup(func() {
		cctx := context.Background()
		_, err := direct.Exec(cctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{c.schema}.Sanitize()+" CASCADE")
		if err != nil {
			t.Errorf("drop schema %s: %v", c.schema, err)
		}
		iter := c.rdb.Scan(cctx, 0, c.prefix+"*", 1000).Iterator()
		var keys []string
		for iter.Next(cctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			_ = c.rdb.Del(cctx, keys...).Err()
		}
		_ = c.rdb.Close()
	})

	workers := map[string]http.Handler{
		"echo": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c.workerCalls.Add(1)
			if g := c.gate.Load(); g != nil {
				<-*g
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"ok":true,"path":"`+r.URL.Path+`"}`)
		}),
	}
	for range cfg.replicas {
		// Each replica: its own Redis client and its own PostgreSQL pool.
		o := *ropts
		if cfg.redisAddr != "" {
			o.Addr = cfg.redisAddr
		}
		// Fail fast when Redis is away: no command retries (a retried
		// increment could count twice) and one dial attempt per command.
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout = time.Second, 2*time.Second, 2*time.Second
		o.MaxRetries, o.DialerRetries = -1, 1
		o.PoolSize = 64
		rdb := goredis.NewClient(&o)
		if cfg.redisHook != nil {
			rdb.AddHook(cfg.redisHook)
		}
		t.Cleanup(func() { _ = rdb.Close() })
		pool := newPool(t, dbURL, cfg.pgAddr, 16)
		pg, err := postgres.New(ctx, pool, postgres.Config{Schema: c.schema})
		require.NoError(t, err)
		r := &replica{rdb: rdb, pool: pool}
		r.handler, r.pay, r.sink = c.wire(t, redis.New(rdb, redis.Config{Prefix: c.prefix}), pg, workers, cfg.events, cfg.instant)
		c.replicas = append(c.replicas, r)
	}
	return c
}

// wire builds one replica's dispatcher the way examples/httpserver does.
func (c *cluster) wire(t testing.TB, kvs *redis.KV, pg *postgres.Store, workers map[string]http.Handler, events, instant bool) (http.Handler, *payment.Stage, *metrics.AsyncSink) {
	t.Helper()
	log := slog.New(c.log)
	led, err := ledger.New(pg, ledger.Config{})
	require.NoError(t, err)
	var fac x402.Facilitator = &instantFacilitator{}
	if !instant {
		lf, err := localfacilitator.New(localfacilitator.Config{Store: kvs})
		require.NoError(t, err)
		fac = lf
	}
	limiter, err := quota.New(kvs, quota.Config{})
	require.NoError(t, err)
	pay, err := payment.NewStage(payment.Config{
		Facilitator: &countingFacilitator{Facilitator: fac, c: c}, KV: kvs, Ledger: led,
		Meter: limiter, PayTo: payTo, Logger: log,
	})
	require.NoError(t, err)
	cfg := dispatch.Config{
		Tenants: tenant.NewRegistry(c.dir),
		Fetcher: dispatch.NewHandlerFetcher(workers),
		Stages:  []dispatch.Stage{limiter.Stage(), pay},
		Logger:  log,
	}
	var sink *metrics.AsyncSink
	if events {
		sink, err = metrics.NewAsyncSink(pg, metrics.AsyncSinkConfig{Logger: log})
		require.NoError(t, err)
		t.Cleanup(func() { _ = sink.Close(context.Background()) })
		cfg.Events = metrics.UsageSink(sink)
	}
	d, err := dispatch.NewDispatcher(cfg)
	require.NoError(t, err)
	return d, pay, sink
}

func newPool(t testing.TB, dbURL, addr string, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dbURL)
	require.NoError(t, err)
	if addr != "" {
		host, port, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		n, err := strconv.Atoi(port)
		require.NoError(t, err)
		cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Fallbacks = host, uint16(n), nil
	}
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// instantFacilitator is a facilitator double that answers at once: every
// payment is valid and settles for the requirement's amount, with a
// distinct transaction hash.
type instantFacilitator struct{ n atomic.Uint64 }

func (f *instantFacilitator) Verify(_ context.Context, r x402.FacilitatorRequest) (*x402.VerifyResponse, error) {
	return &x402.VerifyResponse{IsValid: true, Payer: r.Payment.Payer}, nil
}

func (f *instantFacilitator) Settle(_ context.Context, r x402.FacilitatorRequest) (*x402.SettleResponse, error) {
	return &x402.SettleResponse{
		Success: true, Payer: r.Payment.Payer, Network: r.Requirement.Network, Amount: r.Requirement.Amount,
		Transaction: fmt.Sprintf("0x%064x", f.n.Add(1)),
	}, nil
}

func (f *instantFacilitator) Supported(context.Context) (*x402.SupportedResponse, error) {
	return &x402.SupportedResponse{}, nil
}

// countingFacilitator counts Settle calls across all replicas.
type countingFacilitator struct {
	x402.Facilitator
	c *cluster
}

func (f *countingFacilitator) Settle(ctx context.Context, req x402.FacilitatorRequest) (*x402.SettleResponse, error) {
	f.c.settles.Add(1)
	sr, err := f.Facilitator.Settle(ctx, req)
	if err == nil && sr.Success {
		f.c.settleOK.Add(1)
	}
	return sr, err
}

// requirement is what the gateway asks for a request to path of tenant slug.
func (c *cluster) requirement(t testing.TB, slug, path string) x402.Requirement {
	t.Helper()
	ten, ok := c.dir.Lookup(slug)
	require.True(t, ok)
	req, err := c.replicas[0].pay.Requirement(ten, httptest.NewRequest(http.MethodGet, "http://gateway.test"+path, nil))
	require.NoError(t, err)
	return req
}

// signPayments signs n distinct payments (fresh nonces) for path.
func (c *cluster) signPayments(t testing.TB, slug, path string, n int) []string {
	t.Helper()
	signer, err := localfacilitator.GenerateSigner()
	require.NoError(t, err)
	req := c.requirement(t, slug, path)
	out := make([]string, n)
	for i := range out {
		out[i], err = signer.PaymentSignature(req, localfacilitator.SignOptions{})
		require.NoError(t, err)
	}
	return out
}

// result is one answer.
type result struct {
	status  int
	code    string // the gateway's error code, if any
	deduped bool
	header  http.Header
	body    string
}

// do sends one request to replica i.
func (c *cluster) do(i int, path string, payment string) result {
	r := httptest.NewRequest(http.MethodGet, "http://gateway.test"+path, nil)
	r.Header.Set("X-Agent-Id", "agent-"+strconv.Itoa(i%7))
	if payment != "" {
		r.Header.Set(x402.HeaderPaymentSignature, payment)
	}
	w := httptest.NewRecorder()
	c.replicas[i%len(c.replicas)].handler.ServeHTTP(w, r)
	res := result{status: w.Code, header: w.Header(), body: w.Body.String(), deduped: w.Header().Get(x402.HeaderPaymentDeduped) == "true"}
	if w.Code >= 400 {
		res.code = errorCode(res.body)
	}
	return res
}

func errorCode(body string) string {
	const k = `"error":"`
	i := strings.Index(body, k)
	if i < 0 {
		return ""
	}
	rest := body[i+len(k):]
	if j := strings.IndexByte(rest, '"'); j >= 0 {
		return rest[:j]
	}
	return ""
}

// fire sends n requests at once, request i to replica i%replicas, and
// returns the answers by index.
func (c *cluster) fire(n int, req func(i int) (path, payment string)) []result {
	out := make([]result, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path, pay := req(i)
			<-start
			out[i] = c.do(i, path, pay)
		}()
	}
	close(start)
	wg.Wait()
	return out
}

// count tallies answers by "status code" (code is "" for success).
func count(rs []result) map[string]int {
	m := map[string]int{}
	for _, r := range rs {
		k := strconv.Itoa(r.status)
		if r.code != "" {
			k += " " + r.code
		}
		if r.deduped {
			k += " deduped"
		}
		m[k]++
	}
	return m
}

// entries lists the ledger entries of slug by status.
func (c *cluster) entries(t testing.TB, slug string) map[ledger.Status]int {
	t.Helper()
	es, err := c.store.ListEntries(context.Background(), ledger.ListEntriesParams{Tenant: slug})
	require.NoError(t, err)
	m := map[ledger.Status]int{}
	for _, e := range es {
		m[e.Status]++
	}
	return m
}

// verifyChain walks the audit chain and returns its length.
func (c *cluster) verifyChain(t testing.TB) int64 {
	t.Helper()
	l, err := ledger.New(c.store, ledger.Config{})
	require.NoError(t, err)
	n, err := l.Verify(context.Background())
	require.NoError(t, err)
	// No entry without its audit record, and no settlement record without
	// its entry (Verify checks the latter).
	es, err := c.store.ListEntries(context.Background(), ledger.ListEntriesParams{})
	require.NoError(t, err)
	recs, err := c.store.ListAudit(context.Background(), ledger.ListAuditParams{})
	require.NoError(t, err)
	settlementRecs := 0
	for _, r := range recs {
		if ledger.IsSettlementKind(r.Kind) {
			settlementRecs++
		}
	}
	require.Equal(t, len(es), settlementRecs, "every ledger entry has exactly one audit record")
	return n
}

// logRecorder is a slog.Handler that keeps error messages for assertions.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecorder) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelError }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var sb strings.Builder
	sb.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&sb, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	l.msgs = append(l.msgs, sb.String())
	l.mu.Unlock()
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) contains(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if strings.Contains(m, s) {
			n++
		}
	}
	return n
}
