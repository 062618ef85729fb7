// Command httpserver runs a paid-API marketplace gateway on localhost: the
// dispatcher with a demo CSV API (free and paid routes), x402 payments
// through the built-in local facilitator, rate limits, quotas and spend
// caps, the settlement ledger with its audit chain, and marketplace
// analytics, on an embedded SQLite file by default.
//
//	go run ./examples/httpserver
//	go run ./examples/httpserver -store memory -addr 127.0.0.1:9000
//	go run ./examples/httpserver verify -store sqlite:./data/dispatcher.db
//
// See -help for every flag and its environment variable.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/402claw/dispatcher/adapters/upstream"
	"github.com/402claw/dispatcher/discovery"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/examples/httpserver/demo"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/marketplace"
	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/ops"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/exact"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/payment"
	"github.com/402claw/dispatcher/x402/permit2"
	"github.com/402claw/dispatcher/x402/upto"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if len(os.Args) > 1 && os.Args[1] == "verify" {
		os.Exit(verifyCommand(os.Args[2:], os.Stdout, os.Stderr))
	}
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpserver: "+oneLine(err))
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, log); err != nil {
		fmt.Fprintln(os.Stderr, "httpserver: "+oneLine(err))
		os.Exit(1)
	}
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// server is the wired gateway, ready to serve.
type server struct {
	handler    http.Handler
	registry   *tenant.Registry
	backends   *backends
	sink       *metrics.AsyncSink
	adminToken string
	local      bool
	pay        *payment.Stage
	log        *slog.Logger
	tracing    *ops.Tracing
	admin      *ops.AdminHandler
	claimer    *channel.Claimer // nil without payment channels
	channels   *channel.Service // nil without payment channels
	claimEvery time.Duration    // how often the claimer runs
}

// recoverAge is how old a settlement intent must be before a running
// gateway takes it for one a crashed replica left behind: well above the
// payment stage's settle timeout (30 s).
const recoverAge = 2 * time.Minute

// recoverLoop looks for settlements crashed replicas left unrecorded.
// At start it books the channel movements a crash may have left out of
// the ledger (channel.Service.Reconcile).
func (s *server) recoverLoop(ctx context.Context) {
	if s.channels != nil {
		if n, err := s.channels.Reconcile(ctx); err != nil {
			s.log.Warn("reconciling channel journal entries", "err", err)
		} else if n > 0 {
			s.log.Info("reconciled channel journal entries", "channels", n)
		}
	}
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	ct := time.NewTicker(s.claimEvery)
	defer ct.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ct.C:
			if s.claimer != nil {
				if rep, err := s.claimer.RunOnce(ctx); err != nil {
					s.log.Warn("claiming channel charges", "err", err)
				} else if len(rep.Claimed) > 0 {
					s.log.Info("claimed channel charges", "channels", len(rep.Claimed), "calls", rep.Calls, "settled", rep.Settled)
				}
			}
		case <-t.C:
			if rep, err := s.pay.Recover(ctx, recoverAge); err != nil {
				s.log.Warn("settlement recovery", "err", err)
			} else if len(rep.Recovered) > 0 {
				s.log.Warn("recorded settlements a crashed replica left unrecorded as pending", "count", len(rep.Recovered))
			}
		}
	}
}

func (s *server) Close(ctx context.Context) {
	if err := s.sink.Close(ctx); err != nil {
		slog.Default().Warn("flushing usage events", "err", err)
	}
	s.backends.Close()
}

// build wires every part from cfg; main.go is where the whole system is put
// together in plain sight.
func build(ctx context.Context, cfg config, log *slog.Logger) (*server, error) {
	b, err := openBackends(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			b.Close()
		}
	}()
	// Operations: Prometheus metrics on their own registry, and OpenTelemetry
	// tracing when OTEL_EXPORTER_OTLP_ENDPOINT is set (off, it costs
	// nothing). The stores are timed through thin wrappers.
	om, err := ops.NewMetrics(ops.MetricsConfig{Token: cfg.metricsToken, RuntimeMetrics: true})
	if err != nil {
		return nil, err
	}
	tr, err := ops.NewTracing(ctx, ops.TracingConfig{ServiceName: "dispatcher"})
	if err != nil {
		return nil, err
	}
	b.kv = om.KVStore(b.kv)
	led, err := ledger.New(om.LedgerStore(b.ledger), ledger.Config{})
	if err != nil {
		return nil, err
	}

	// Tenants: -tenants, else TENANT_DIRECTORY_JSON, else what the store
	// holds, else the demo directory.
	dir, source, err := loadDirectory(ctx, cfg, b)
	if err != nil {
		return nil, err
	}
	if b.tenants != nil && source != "store" {
		if err := b.tenants.SaveTenants(ctx, dir.Tenants()); err != nil {
			return nil, fmt.Errorf("saving tenants: %w", err)
		}
	}
	raw, _ := dir.MarshalJSON()
	sum := sha256.Sum256(raw)
	if _, err := led.Audit(ctx, ledger.KindDirectorySwap, "", hex.EncodeToString(sum[:8]), map[string]any{"source": source, "tenants": dir.Len()}); err != nil {
		return nil, fmt.Errorf("auditing the directory load: %w", err)
	}
	registry := tenant.NewRegistry(dir)

	// Workers: the built-in demo workers in process, data sets published
	// with claw (worker names csv:<name>) by the built-in CSV worker, and
	// -workers over HTTP.
	var fetcher dispatch.Fetcher = dispatch.NewHandlerFetcher(demo.Workers())
	if b.datasets != nil {
		fetcher = demo.NewDatasetWorker(b.datasets).Fetcher(fetcher)
	}
	if cfg.workersFile != "" {
		data, err := readFile(cfg.workersFile)
		if err != nil {
			return nil, fmt.Errorf("-workers: %w", err)
		}
		var urls map[string]string
		if err := json.Unmarshal(data, &urls); err != nil {
			return nil, fmt.Errorf("-workers %s: not a JSON object of workerName -> base URL: %v", cfg.workersFile, err)
		}
		up, err := upstream.New(upstream.Config{Workers: urls})
		if err != nil {
			return nil, fmt.Errorf("-workers: %w", err)
		}
		fetcher = routeFetcher{upstream: up, names: urls, fallback: fetcher}
	}

	// Payments: a remote facilitator, or the local one over the KV store.
	// upto requirements name the facilitator that may settle them: the
	// remote one's address from its /supported answer, or the local one's.
	var fac x402.Facilitator
	var facHandler http.Handler
	var facAddress string
	var supported *x402.SupportedResponse
	if cfg.facilitatorURL != "" {
		fc, err := x402.NewFacilitatorClient(cfg.facilitatorURL, x402.FacilitatorConfig{APIKey: cfg.facilitatorAPIKey,
			HTTPClient: &http.Client{Transport: ops.TraceTransport(x402.NewFacilitatorTransport())}})
		if err != nil {
			return nil, fmt.Errorf("-facilitator-url: %w", err)
		}
		fac = fc
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if sup, err := fc.Supported(sctx); err == nil {
			supported = sup
			facAddress, _ = upto.FacilitatorAddress(sup, cfg.network)
		} else {
			log.Warn("the facilitator's /supported did not answer; upto and batch-settlement routes are not offered", "err", err)
		}
		cancel()
	} else {
		lf, err := localfacilitator.New(localfacilitator.Config{Store: b.kv})
		if err != nil {
			return nil, err
		}
		fac, facHandler, facAddress = lf, lf.Handler(), lf.Address()
		if supported, err = lf.Supported(ctx); err != nil {
			return nil, err
		}
	}
	fac = ops.TraceFacilitator(tr, om.Facilitator(fac))
	schemes := []x402.Scheme{exact.New(), permit2.New()}
	if facAddress != "" {
		us, err := upto.New(upto.Config{FacilitatorAddress: facAddress})
		if err != nil {
			return nil, err
		}
		schemes = append(schemes, us)
	}
	// Payment channels (batch-settlement): channel state lives in the KV
	// store; every charge, claim and settle sweep is a ledger entry in the
	// hash chain (deposits and refunds audit records); a claimer moves
	// charges on chain in batches (run()).
	var channels payment.Channels
	var claimer *channel.Claimer
	var chsvc *channel.Service
	if auth, ok := receiverAuthorizer(supported, cfg.network); ok {
		sc, err := channel.NewScheme(channel.SchemeConfig{ReceiverAuthorizer: auth})
		if err != nil {
			return nil, err
		}
		owner := func(slug string) string {
			if t, ok := registry.Load().Lookup(slug); ok {
				return t.OwnerUserID
			}
			return ""
		}
		svc, err := channel.New(b.kv, channel.Config{Scheme: sc, Facilitator: fac, Logger: log,
			Journal: channel.LedgerJournal(led, channel.LedgerJournalConfig{Owner: owner})})
		if err != nil {
			return nil, err
		}
		if claimer, err = channel.NewClaimer(svc, channel.ClaimerConfig{Facilitator: fac, Interval: cfg.claimInterval}); err != nil {
			return nil, err
		}
		schemes = append(schemes, svc.Scheme())
		channels = channel.StageChannels(svc)
		chsvc = svc
	}

	limiter, err := quota.New(b.kv, quota.Config{DraftHeaders: cfg.draftHeaders})
	if err != nil {
		return nil, err
	}
	pay, err := payment.NewStage(payment.Config{
		Facilitator: fac, KV: b.kv, Ledger: led, Meter: limiter,
		Schemes: schemes, Channels: channels, Charge: x402.ParseSettlementOverrides, OnSettlement: om.Settlement,
		// A route that declares discovery carries its Bazaar declaration in
		// every 402; a browser gets the 402 as a page.
		Extensions: bazaarExtension(log),
		Paywall: func(r *http.Request, pr x402.PaymentRequired) (string, []byte, bool) {
			if !marketplace.WantsHTML(r) {
				return "", nil, false
			}
			return marketplace.PaywallContentType, marketplace.Paywall(pr), true
		},
		Network: cfg.network, PayTo: cfg.payTo, Logger: log,
	})
	if err != nil {
		return nil, err
	}

	// Settlements a killed gateway left without a ledger entry are recorded
	// as pending. A single gateway on SQLite (or memory) has no other
	// process settling, so at start-up every open intent is a crashed one;
	// on a shared PostgreSQL store only old intents are.
	startAge := time.Duration(0)
	if strings.HasPrefix(cfg.store, "postgres") {
		startAge = recoverAge
	}
	if rep, err := pay.Recover(ctx, startAge); err != nil {
		return nil, fmt.Errorf("recovering settlements: %w", err)
	} else if len(rep.Recovered) > 0 {
		log.Warn("recorded settlements a previous run left unrecorded as pending", "count", len(rep.Recovered))
	}

	sink, err := metrics.NewAsyncSink(b.events, metrics.AsyncSinkConfig{Logger: log})
	if err != nil {
		return nil, err
	}
	om.CountDropped(sink.Dropped)
	token := cfg.adminToken
	if token == "" {
		var raw [16]byte
		_, _ = rand.Read(raw[:])
		token = hex.EncodeToString(raw[:])
	}
	platform, err := metrics.NewPlatformHandler(b.events, metrics.PlatformConfig{
		AdminToken: token, Logger: log,
		PublishedAPIs: func() []metrics.APIInfo {
			ts := registry.Load().Tenants()
			out := make([]metrics.APIInfo, len(ts))
			for i, t := range ts {
				out[i] = metrics.APIInfo{APIID: t.Slug, Owner: t.OwnerUserID, Directory: t.Directory}
			}
			return out
		},
	})
	if err != nil {
		return nil, err
	}
	// The admin API (tenants at runtime, owners and their keys, data
	// sets, payment status, ledger verification) in front of the
	// platform routes; every change is checked as the payment stage sees
	// it, saved, swapped in and audited.
	var accounts *ops.Accounts
	if b.users != nil {
		if accounts, err = ops.NewAccounts(b.users, ops.AccountsConfig{}); err != nil {
			return nil, err
		}
	}
	admin, err := ops.NewAdminHandler(ops.AdminConfig{
		AdminToken: token, Registry: registry, Store: b.tenants, Ledger: led,
		Accounts: accounts, Datasets: b.datasets, Validate: func(d *tenant.Directory) error {
			if err := pay.CheckDirectory(d); err != nil {
				return err
			}
			return discovery.ValidateDirectory(d)
		},
		Next: platform, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	// A directory offering a scheme this gateway cannot take is refused
	// at start-up; the demo directory's upto route only needs a
	// facilitator that settles upto, so without one it is merely not paid.
	if err := discovery.ValidateDirectory(registry.Load()); err != nil {
		return nil, err
	}
	if err := pay.CheckDirectory(registry.Load()); err != nil {
		if source != "demo" {
			return nil, err
		}
		log.Warn("the demo directory offers a scheme this facilitator cannot settle", "err", err)
	}
	// The front: discovery for agents, the marketplace for people, on the
	// platform's own host names (a tenant's host still reaches the tenant).
	disc, err := discovery.NewHandler(discovery.Config{Registry: registry, Offers: pay, Events: b.events,
		BaseURL: cfg.publicURL, Name: "402claw", Description: "paid APIs over x402", Logger: log})
	if err != nil {
		return nil, err
	}
	market, err := marketplace.New(marketplace.Config{Registry: registry, Events: b.events, BaseURL: cfg.publicURL, Logger: log})
	if err != nil {
		return nil, err
	}
	front := http.NewServeMux()
	front.Handle(discovery.ResourcesPath, disc)
	front.Handle(discovery.ResourcesPath+"/", disc)
	front.Handle(discovery.WellKnownPath, disc)
	front.Handle(discovery.WellKnownPath+".json", disc)
	front.Handle("/", market)

	identity := func(r *http.Request) string { return dispatch.Identity(r, cfg.trustedProxies) }
	clientIP := func(r *http.Request) netip.Addr { a, _ := dispatch.ClientAddr(r, cfg.trustedProxies); return a }
	d, err := dispatch.NewDispatcher(dispatch.Config{
		Tenants:  registry,
		Fetcher:  ops.TraceFetcher(tr, fetcher),
		Stages:   ops.TraceStages(tr, limiter.Stage(), pay),
		Events:   dispatch.MultiSink(metrics.UsageSink(sink), om.Sink(), ops.TraceSink(), ops.LogSink(log)),
		Platform: admin,
		Fallback: front,
		Identity: identity,
		ClientIP: clientIP,
		Logger:   log,
		// Bounds of a tenant request, also when this handler is mounted
		// behind a server that sets none.
		MaxBodyBytes: cfg.maxBodyBytes,
		ReadTimeout:  cfg.readTimeout,
		WriteTimeout: cfg.writeTimeout,
	})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	traced := ops.TraceHandler(tr, d)
	mux.Handle("/", traced)
	// /metrics is the gateway's, except on a tenant's own host.
	metricsHandler := om.Handler()
	mux.Handle("GET /metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if res, err := registry.Load().Resolve(r.Host, r.URL.EscapedPath()); err == nil && res.ByHost {
			traced.ServeHTTP(w, r)
			return
		}
		metricsHandler.ServeHTTP(w, r)
	}))
	if facHandler != nil {
		// The local facilitator settles with the operator's authority and
		// keeps nonce records: only the admin may call it over HTTP.
		mux.Handle("/__facilitator/", requireToken(token, http.StripPrefix("/__facilitator", facHandler)))
	}
	ok = true
	return &server{handler: mux, registry: registry, backends: b, sink: sink, adminToken: token, local: facHandler != nil, pay: pay, log: log, tracing: tr, admin: admin, claimer: claimer, channels: chsvc,
		claimEvery: min(30*time.Second, max(cfg.claimInterval/2, 100*time.Millisecond))}, nil
}

// receiverAuthorizer is the facilitator's batch-settlement receiver
// authorizer from its /supported answer, when it has one.
func receiverAuthorizer(sup *x402.SupportedResponse, network string) (string, bool) {
	if sup == nil {
		return "", false
	}
	return channel.ReceiverAuthorizer(sup, network)
}

// bazaarExtension returns the payment stage's Extensions hook: the Bazaar
// declaration of the route a request matched, when it declares discovery.
func bazaarExtension(log *slog.Logger) func(x *dispatch.Exchange) x402.Extensions {
	return func(x *dispatch.Exchange) x402.Extensions {
		r := x.Price.Route
		if r == nil || len(r.Discovery) == 0 {
			return nil
		}
		// The template is what clients call: under /t/<slug> on the shared
		// host, as is on the tenant's own.
		prefix := ""
		if !x.Resolution.ByHost {
			prefix = "/t/" + x.Tenant.Slug
		}
		raw, err := discovery.BazaarExtensionWith(x.Request.Method, r, discovery.BazaarOptions{
			Prefix: prefix, PathParams: discovery.PathParams(r.Path, x.Resolution.Path)})
		if err != nil || raw == nil {
			if err != nil {
				log.Warn("route discovery declaration", "tenant", x.Tenant.Slug, "route", r.Path, "err", err)
			}
			return nil
		}
		return x402.Extensions{discovery.ExtensionKey: raw}
	}
}

// requireToken lets through only requests bearing the admin token.
func requireToken(token string, h http.Handler) http.Handler {
	want := sha256.Sum256([]byte("Bearer " + token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := sha256.Sum256([]byte(r.Header.Get("Authorization")))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			dispatch.WriteError(w, dispatch.ErrUnauthorized, r.Header.Get(dispatch.HeaderRequestID))
			return
		}
		h.ServeHTTP(w, r)
	})
}

func loadDirectory(ctx context.Context, cfg config, b *backends) (*tenant.Directory, string, error) {
	switch {
	case cfg.tenantsFile != "":
		data, err := readFile(cfg.tenantsFile)
		if err != nil {
			return nil, "", fmt.Errorf("-tenants: %w", err)
		}
		d, err := tenant.ParseDirectory(data)
		if err != nil {
			return nil, "", fmt.Errorf("-tenants %s: %w", cfg.tenantsFile, err)
		}
		return d, "file", nil
	case cfg.tenantsJSON != "":
		d, err := tenant.ParseDirectory([]byte(cfg.tenantsJSON))
		if err != nil {
			return nil, "", fmt.Errorf("TENANT_DIRECTORY_JSON: %w", err)
		}
		return d, "env", nil
	case b.tenants != nil:
		ts, err := b.tenants.LoadTenants(ctx)
		if err != nil {
			return nil, "", fmt.Errorf("loading tenants from the store: %w", err)
		}
		if len(ts) > 0 {
			d, err := tenant.NewDirectory(ts)
			if err != nil {
				return nil, "", fmt.Errorf("tenants in the store: %w", err)
			}
			return d, "store", nil
		}
	}
	d, err := tenant.ParseDirectory([]byte(demo.DemoDirectoryJSON))
	if err != nil {
		return nil, "", fmt.Errorf("demo directory: %w", err)
	}
	return d, "demo", nil
}

// routeFetcher sends the workers named in -workers upstream and the rest to
// the built-in demo workers.
type routeFetcher struct {
	upstream dispatch.Fetcher
	names    map[string]string
	fallback dispatch.Fetcher
}

func (f routeFetcher) Fetch(ctx context.Context, req *http.Request, p *dispatch.Payload) (*http.Response, error) {
	if _, ok := f.names[p.WorkerName]; ok {
		return f.upstream.Fetch(ctx, req, p)
	}
	return f.fallback.Fetch(ctx, req, p)
}

func run(ctx context.Context, cfg config, stdout io.Writer, log *slog.Logger) error {
	s, err := build(ctx, cfg, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		s.Close(context.Background())
		return err
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       cfg.readTimeout,
		WriteTimeout:      cfg.writeTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	printBanner(stdout, "http://"+ln.Addr().String(), cfg, s)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	rctx, stopRecover := context.WithCancel(context.Background())
	recoverDone := make(chan struct{})
	go func() { defer close(recoverDone); s.recoverLoop(rctx) }()
	// Every replica follows directory changes another replica saved
	// (through the admin API) within a second or two.
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		_ = s.admin.Watch(rctx, ops.WatchConfig{Interval: time.Second, Logger: log,
			OnSwap: func(_ *tenant.Directory, version string) {
				log.Info("directory changed by another replica", "version", version)
			}})
	}()
	// The recovery loop stops before the stores close.
	stopRecovery := func() { stopRecover(); <-recoverDone; <-watchDone }
	select {
	case err := <-errc:
		stopRecovery()
		s.Close(context.Background())
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: letting in-flight requests finish", "timeout", fmt.Sprintf("%ds", cfg.drainTimeoutSecs))
	drain, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.drainTimeoutSecs)*time.Second)
	defer cancel()
	err = srv.Shutdown(drain)
	stopRecovery()
	if terr := s.tracing.Shutdown(drain); terr != nil {
		log.Warn("flushing traces", "err", terr)
	}
	s.Close(drain)
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}

func printBanner(w io.Writer, base string, cfg config, s *server) {
	fac := "built-in local facilitator (" + base + "/__facilitator)"
	if !s.local {
		fac = cfg.facilitatorURL
	}
	fmt.Fprintf(w, `402claw dispatcher listening on %s
  store: %s   kv: %s   network: %s   facilitator: %s
  tenants: %d   admin token: %s

Try:
  open %[8]s/                                                   # the marketplace
  curl -s '%[8]s/t/demo/rows?limit=3'
  curl -s -H 'Accept: text/csv' '%[8]s/t/demo/rows?country=JP'
  curl -s '%[8]s/t/demo-paid/'                                  # a free route on a paid API
  curl -si '%[8]s/t/demo-paid/rows?limit=2'                     # 402 Payment Required (0.001 USD)
  go run ./examples/payclient -url '%[8]s/t/demo-paid/rows?limit=2'            # pays with a test key
  go run ./examples/payclient -scheme upto -url '%[8]s/t/demo-paid/metered/rows?limit=3'  # pays by use
  go run ./examples/payclient -scheme batch-settlement -url '%[8]s/t/demo-paid/channel/rows?limit=3'  # over a channel
  curl -s '%[8]s/discovery/resources?limit=5'                   # the x402 Bazaar catalog
  curl -s '%[8]s/__platform/analytics?window=today'
  curl -s -H 'Authorization: Bearer %[7]s' '%[8]s/__platform/events?limit=5'
  curl -s -H 'Authorization: Bearer %[7]s' '%[8]s/__platform/tenants'
  curl -s '%[8]s/metrics' | grep dispatcher_
`, base, cfg.store, cfg.kv, cfg.network, fac, s.registry.Load().Len(), s.adminToken, base)
}

// verifyCommand walks the audit chain of a store: httpserver verify -store URL.
func verifyCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	store := fs.String("store", envOr("STORE_URL", "sqlite:./data/dispatcher.db"), "store whose audit chain to verify")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx := context.Background()
	b := &backends{}
	defer b.Close()
	st, err := openURL(ctx, *store, b)
	if err != nil {
		fmt.Fprintln(stderr, "verify: "+oneLine(err))
		return 2
	}
	ls, ok := st.(ledger.Store)
	if !ok {
		fmt.Fprintln(stderr, "verify: the store holds no ledger")
		return 2
	}
	led, err := ledger.New(ls, ledger.Config{})
	if err != nil {
		fmt.Fprintln(stderr, "verify: "+oneLine(err))
		return 2
	}
	n, err := led.Verify(ctx)
	if err != nil {
		fmt.Fprintf(stdout, "audit chain BROKEN after %d good records: %s\n", n, oneLine(err))
		return 1
	}
	fmt.Fprintf(stdout, "audit chain OK: %d records verified\n", n)
	return 0
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
