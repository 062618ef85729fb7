// Command loadgen is a load, fault and soak harness for the example server
// (examples/httpserver) that checks the money invariants after the run.
//
// It launches the server as a child process with a generated tenant
// directory (free and paid tenants, some with tight per-caller rate limits,
// small daily or monthly quotas, small spend caps, a short wall-clock
// budget), points -workers at fault-injecting upstream workers and
// -facilitator-url at a fault-injecting facilitator that it serves itself on
// 127.0.0.1, and drives a mixed workload for -duration from -concurrency
// virtual clients: free and paid requests over many tenants and callers,
// replays of one payment (sequential and concurrent), a payment reused for
// another request, and invalid payments (garbage, wrong amount, expired).
// Payments are signed with test keys by localfacilitator.Signer.
//
// With -kill-every it SIGKILLs the gateway periodically and restarts it on
// the same store. After the run it stops the gateway, reads the ledger from
// the store through the adapter, and checks that every settled ledger entry
// matches exactly one settlement the facilitator made and the reverse, that
// no key or authorization was settled twice, that spend caps and usage
// quotas held per tenant and UTC day/month (from the ledger and from its own
// observations), and that the audit chain verifies. It exits 1 on any
// breach, 2 when the harness itself failed. With -mix hostile it adds
// hostile clients and workers and checks what the gateway refuses
// (hostile.go).
//
// With -mix channels (or -channel-payers N) it adds payers that pay over
// batch-settlement payment channels (channels.go): deposits, a voucher per
// request, the same voucher sent several times at once, stale vouchers and
// their corrective 402s, worker-reported charges (some above the maximum),
// top-ups and refunds, all through the SIGKILL restarts. The gateway runs
// with -claim-interval (2s by default); after the load the facilitator's
// faults are turned off and the harness waits three claim intervals for
// the gateway's claimer (and its reconciliation), then checks per channel
// (chaninvariants.go), from the ledger, the gateway's KV channel state and
// the facilitator's emulated escrow: the charge entries chain up to
// chargedCumulativeAmount; charged >= claimed; no charge beyond the voucher
// the payer signed, the stored voucher, the deposits or the escrow
// balance; the claim entries add up to the escrow's totalClaimed (nothing
// claimed twice, no claim unrecorded) and the sweeps to what it settled;
// every charged answer a payer got is a charge entry and every charge an
// answer or a request cut off; and nothing a payer checked on the spot
// (charge = the worker's report, cumulative within the voucher, corrective
// 402s proven with the payer's own voucher, one charge per voucher) broke.
//
//	go run ./examples/loadgen -duration 30s -concurrency 32
//	go run ./examples/loadgen -duration 45s -kill-every 15s
//	go run ./examples/loadgen -kv redis://127.0.0.1:6379/9
//	go run ./examples/loadgen -duration 20s -mix hostile
//	go run ./examples/loadgen -duration 30s -mix channels -kill-every 10s
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

// config is the harness's configuration (flags).
type config struct {
	server      string // built server binary; "" builds one
	workDir     string // "" makes a temporary one
	keep        bool
	duration    time.Duration
	concurrency int
	store, kv   string
	killEvery   time.Duration
	freeTenants int
	paidTenants int
	callers     int
	payers      int
	strictCrash bool
	pgFresh     bool // run on a fresh PostgreSQL database
	quiet       bool // no progress lines
	seed        uint64
	mix         string // -mix: mixDefault, mixHostile (hostile.go) or mixChannels (channels.go)
	// chanPayers is the number of payment-channel payers (channels.go);
	// claimInterval the gateway's -claim-interval while they pay.
	chanPayers    int
	claimInterval time.Duration
	worker        workerFaults
	fac           facilitatorFaults
}

func defaultConfig() config {
	return config{
		duration: 30 * time.Second, concurrency: 32,
		freeTenants: 10, paidTenants: 10, callers: 200, payers: 8, mix: mixDefault, claimInterval: 2 * time.Second,
		worker: workerFaults{Slow: 0.05, SlowDelay: 400 * time.Millisecond, Fail: 0.02, Reset: 0.01},
		fac: facilitatorFaults{Slow: 0.05, SlowDelay: 300 * time.Millisecond, Verify5xx: 0.01, Settle5xx: 0.01,
			SettleFail: 0.02, Timeout: 0.003, SettledTimeout: 0.003, TimeoutDelay: 11 * time.Second},
	}
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	c := defaultConfig()
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.server, "server", "", "path to a built examples/httpserver binary; empty: build it with go build (run from inside the module)")
	fs.StringVar(&c.workDir, "workdir", "", "directory for the tenant/worker files, the database and the server log; empty: a temporary one, removed after a clean run")
	fs.BoolVar(&c.keep, "keep", false, "keep the work directory after a clean run")
	fs.DurationVar(&c.duration, "duration", c.duration, "how long to send traffic")
	fs.IntVar(&c.concurrency, "concurrency", c.concurrency, "virtual clients sending at once")
	fs.StringVar(&c.store, "store", "", "gateway -store: memory, sqlite:PATH or postgres://...; empty: sqlite:<workdir>/gateway.db")
	fs.StringVar(&c.kv, "kv", "", "gateway -kv: memory, sqlite:PATH, redis://... or postgres://...; empty: same as -store")
	fs.DurationVar(&c.killEvery, "kill-every", 0, "SIGKILL the gateway this often and restart it on the same store (0: never); needs a persistent -store and -kv")
	fs.IntVar(&c.freeTenants, "free-tenants", c.freeTenants, "free tenants to generate")
	fs.IntVar(&c.paidTenants, "paid-tenants", c.paidTenants, "paid tenants to generate")
	fs.IntVar(&c.callers, "callers", c.callers, "distinct X-Agent-Id callers")
	fs.IntVar(&c.payers, "payers", c.payers, "distinct paying test keys")
	fs.BoolVar(&c.pgFresh, "pg-fresh", true, "when -store or -kv is postgres://, create a fresh database for the run (dropped after a clean run) instead of using the one named")
	fs.BoolVar(&c.strictCrash, "strict-crash", false, "count a settlement a SIGKILL cut off before its ledger write as a breach, not a warning")
	fs.BoolVar(&c.quiet, "quiet", false, "no progress lines")
	fs.Uint64Var(&c.seed, "seed", 0, "seed of the workload's choices (0: random)")
	fs.Float64Var(&c.worker.Slow, "worker-slow", c.worker.Slow, "fraction of flaky-worker answers delayed up to -worker-slow-delay")
	fs.DurationVar(&c.worker.SlowDelay, "worker-slow-delay", c.worker.SlowDelay, "upper bound of a slow worker answer")
	fs.Float64Var(&c.worker.Fail, "worker-fail", c.worker.Fail, "fraction of flaky-worker answers that are 500")
	fs.Float64Var(&c.worker.Reset, "worker-reset", c.worker.Reset, "fraction of flaky-worker connections closed without an answer")
	fs.Float64Var(&c.fac.Slow, "fac-slow", c.fac.Slow, "fraction of facilitator calls delayed up to -fac-slow-delay")
	fs.DurationVar(&c.fac.SlowDelay, "fac-slow-delay", c.fac.SlowDelay, "upper bound of a slow facilitator answer")
	fs.Float64Var(&c.fac.Verify5xx, "fac-verify-5xx", c.fac.Verify5xx, "fraction of verify calls answered 503")
	fs.Float64Var(&c.fac.Settle5xx, "fac-settle-5xx", c.fac.Settle5xx, "fraction of settle calls answered 503 without settling")
	fs.Float64Var(&c.fac.SettleFail, "fac-settle-fail", c.fac.SettleFail, "fraction of settle calls answered success:false without settling")
	fs.Float64Var(&c.fac.Timeout, "fac-timeout", c.fac.Timeout, "fraction of verify and settle calls that hang for -fac-timeout-delay without settling")
	fs.Float64Var(&c.fac.SettledTimeout, "fac-settled-timeout", c.fac.SettledTimeout, "fraction of settle calls that settle, then hang for -fac-timeout-delay (the gateway records them pending)")
	fs.DurationVar(&c.fac.TimeoutDelay, "fac-timeout-delay", c.fac.TimeoutDelay, "how long a hanging facilitator call hangs (the gateway's own timeout is 10s)")
	fs.StringVar(&c.mix, "mix", c.mix, "workload mix: default; hostile (adds rotating caller ids, trickled bodies, workers answering 402 or forging gateway headers, authorizations valid until 9999; see hostile.go); or channels (adds payment-channel payers: deposits, concurrent vouchers, corrective 402s, refunds; see channels.go)")
	fs.IntVar(&c.chanPayers, "channel-payers", 0, "payment-channel payers, each paying over its own channels (0: none, or 12 with -mix channels)")
	fs.DurationVar(&c.claimInterval, "claim-interval", c.claimInterval, "the gateway's -claim-interval when channel payers run: how long a charge may stay unclaimed")
	noFaults := fs.Bool("no-faults", false, "inject no faults at all")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *noFaults {
		c.worker = workerFaults{}
		c.fac = facilitatorFaults{}
	}
	switch {
	case c.duration <= 0:
		return c, errors.New("-duration must be positive")
	case c.concurrency <= 0:
		return c, errors.New("-concurrency must be positive")
	case c.freeTenants+c.paidTenants == 0:
		return c, errors.New("no tenants")
	case c.payers <= 0:
		return c, errors.New("-payers must be positive")
	case c.mix != mixDefault && c.mix != mixHostile && c.mix != mixChannels:
		return c, fmt.Errorf("-mix %q: want %s, %s or %s", c.mix, mixDefault, mixHostile, mixChannels)
	case c.chanPayers < 0:
		return c, errors.New("-channel-payers must not be negative")
	}
	if c.mix == mixChannels && c.chanPayers == 0 {
		c.chanPayers = chanPayersDefault
	}
	if c.killEvery > 0 && (c.store == "memory" || c.kv == "memory" || (c.kv == "" && c.store == "memory")) {
		return c, errors.New("-kill-every needs a persistent -store and -kv: a memory store forgets its counters and ledger when the gateway dies")
	}
	return c, nil
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "ratio":
			ratioCommand(os.Args[2:])
			return
		case "paid":
			paidCommand(os.Args[2:])
			return
		case "bare-proxy":
			if err := bareProxyMain(os.Args[2:]); err != nil {
				fmt.Fprintln(os.Stderr, "loadgen bare-proxy:", err)
				os.Exit(2)
			}
			return
		}
	}
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	if !ok {
		fmt.Fprintln(os.Stdout, "\nRESULT: FAIL (money invariants breached)")
		os.Exit(1)
	}
	fmt.Fprintln(os.Stdout, "\nRESULT: PASS")
}

// serve runs h on a fresh 127.0.0.1 port and returns its base URL.
func serve(h http.Handler) (string, *http.Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), srv, nil
}

// syncWriter serialises writes from the progress and kill goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// run performs one harness run and reports whether every invariant held.
func run(ctx context.Context, cfg config, w io.Writer) (bool, error) {
	out := &syncWriter{w: w}
	// Work directory.
	dir := cfg.workDir
	if dir == "" {
		d, err := os.MkdirTemp("", "loadgen-")
		if err != nil {
			return false, err
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	passed := false
	defer func() {
		if cfg.workDir == "" && passed && !cfg.keep {
			os.RemoveAll(dir)
		} else {
			fmt.Fprintf(out, "work directory kept: %s (server.log, tenants.json, gateway.db)\n", dir)
		}
	}()
	store := cfg.store
	if store == "" {
		store = "sqlite:" + filepath.Join(dir, "gateway.db")
	}
	kvURL := cfg.kv
	if kvURL == "" {
		kvURL = store
	}

	// Tenants, unique to this run so shared Redis/PostgreSQL counters of
	// earlier runs cannot interfere.
	var rb [3]byte
	_, _ = rand.Read(rb[:])
	prefix := "lg" + hex.EncodeToString(rb[:])

	// A fresh PostgreSQL database per run.
	if cfg.pgFresh {
		fresh := map[string]string{}
		for _, u := range []*string{&store, &kvURL} {
			if !isPostgres(*u) {
				continue
			}
			if f, ok := fresh[*u]; ok {
				*u = f
				continue
			}
			f, drop, err := freshPostgresDB(ctx, *u, "loadgen_"+prefix)
			if err != nil {
				return false, err
			}
			defer func() {
				if passed && !cfg.keep {
					drop()
				}
			}()
			fresh[*u], *u = f, f
		}
	}
	tenants := genTenants(prefix, cfg.freeTenants, cfg.paidTenants)
	var hostile *hostileMix // the hostile mix's workers and tenants, or nil
	if cfg.mix == mixHostile {
		h, err := newHostileMix(prefix)
		if err != nil {
			return false, err
		}
		defer h.close()
		hostile, tenants = h, append(tenants, h.tenants...)
	}
	var chanTenants []*tenantSpec
	if cfg.chanPayers > 0 {
		chanTenants = genChannelTenants(prefix, chanTenantsCount)
		tenants = append(tenants, chanTenants...)
	}
	limits := map[string]tenantLimits{}
	for _, t := range tenants {
		limits[t.Slug] = limitsOf(t)
	}
	dirJSON, err := directoryJSON(tenants)
	if err != nil {
		return false, err
	}
	tenantsFile := filepath.Join(dir, "tenants.json")
	if err := os.WriteFile(tenantsFile, dirJSON, 0o644); err != nil {
		return false, err
	}

	if cfg.chanPayers > 0 {
		left, err := earlierChannels(ctx, kvURL)
		if err != nil {
			return false, fmt.Errorf("reading the KV store: %w", err)
		}
		if left {
			return false, fmt.Errorf("-kv %s holds payment-channel state of an earlier run (x402ch:*): channel traffic needs a store no other channel run used (a fresh database)", kvURL)
		}
	}

	// Upstream workers and the facilitator, both ours.
	up := &upstream{faults: cfg.worker}
	upBase, upSrv, err := serve(up)
	if err != nil {
		return false, err
	}
	defer upSrv.Close()
	workers := map[string]string{workerHealthy: upBase + "/healthy", workerFlaky: upBase + "/flaky"}
	if hostile != nil {
		hostile.addWorkers(workers)
	}
	workersJSON, _ := json.Marshal(workers)
	workersFile := filepath.Join(dir, "workers.json")
	if err := os.WriteFile(workersFile, workersJSON, 0o644); err != nil {
		return false, err
	}
	stopHangs := make(chan struct{})
	var stopOnce sync.Once
	endHangs := func() { stopOnce.Do(func() { close(stopHangs) }) }
	defer endHangs()
	fac, err := newFaultyFacilitator(cfg.fac, stopHangs)
	if err != nil {
		return false, err
	}
	facBase, facSrv, err := serve(fac)
	if err != nil {
		return false, err
	}
	defer facSrv.Close()

	// Payers (test keys only) and the platform's payTo.
	signers := make([]*localfacilitator.Signer, cfg.payers)
	for i := range signers {
		if signers[i], err = localfacilitator.GenerateSigner(); err != nil {
			return false, err
		}
	}
	payTo, err := localfacilitator.GenerateSigner()
	if err != nil {
		return false, err
	}

	// The gateway.
	bin := cfg.server
	if bin == "" {
		if bin, err = buildServer(ctx, dir, out); err != nil {
			return false, err
		}
	}
	addr, err := freeAddr()
	if err != nil {
		return false, err
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return false, err
	}
	defer logFile.Close()
	args := []string{"-addr", addr, "-tenants", tenantsFile, "-workers", workersFile, "-store", store, "-kv", kvURL,
		"-facilitator-url", facBase, "-pay-to", payTo.Address(), "-admin-token", "loadgen-" + prefix}
	if cfg.chanPayers > 0 {
		args = append(args, "-claim-interval", cfg.claimInterval.String())
	}
	gw := &gateway{bin: bin, args: args, base: "http://" + addr, log: logFile}
	fmt.Fprintf(out, "loadgen: %d tenants (prefix %s), %d callers, %d payers, concurrency %d, duration %s\n",
		len(tenants), prefix, cfg.callers, cfg.payers, cfg.concurrency, cfg.duration)
	fmt.Fprintf(out, "  gateway %s  store %s  kv %s\n  workers %s  facilitator %s  kill-every %s\n",
		gw.base, store, kvURL, upBase, facBase, cfg.killEvery)
	if err := gw.start(ctx); err != nil {
		return false, err
	}
	defer gw.kill() // on every early return

	// Load.
	rec := newRecorder()
	wl := newWorkload(gw.base, prefix, tenants, signers, cfg.callers, cfg.concurrency, rec)
	wl.hostile = hostile
	loadCtx, cancelLoad := context.WithTimeout(ctx, cfg.duration)
	defer cancelLoad()
	seed := cfg.seed
	if seed == 0 {
		seed = mrand.Uint64()
	}
	started := time.Now()
	var clients sync.WaitGroup
	for i := 0; i < cfg.concurrency; i++ {
		rng := mrand.New(mrand.NewPCG(seed, uint64(i)))
		clients.Go(func() { wl.run(loadCtx, rng) })
	}
	var chans *channelTraffic
	if cfg.chanPayers > 0 {
		if chans, err = newChannelTraffic(gw.base, chanTenants, cfg.chanPayers, rec); err != nil {
			return false, err
		}
		clients.Go(func() { chans.run(loadCtx, seed) })
	}

	var kills []killWindow
	var killErr error
	var bg sync.WaitGroup
	if cfg.killEvery > 0 {
		bg.Go(func() {
			t := time.NewTicker(cfg.killEvery)
			defer t.Stop()
			for {
				select {
				case <-loadCtx.Done():
					return
				case <-t.C:
				}
				k := killWindow{Killed: time.Now()}
				gw.kill()
				fmt.Fprintf(out, "[%5.1fs] SIGKILLed the gateway; restarting on the same store\n", time.Since(started).Seconds())
				if err := gw.start(ctx); err != nil {
					killErr = fmt.Errorf("restarting the gateway after SIGKILL: %w", err)
					cancelLoad()
					return
				}
				k.Healthy = time.Now()
				kills = append(kills, k)
				fmt.Fprintf(out, "[%5.1fs] gateway back after %s\n", time.Since(started).Seconds(), k.Healthy.Sub(k.Killed).Round(time.Millisecond))
			}
		})
	}
	bg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var last int64
		lastAt := started
		for {
			select {
			case <-loadCtx.Done():
				return
			case now := <-t.C:
				total, counts := rec.snapshot()
				if !cfg.quiet {
					fmt.Fprintln(out, progressLine(now.Sub(started), float64(total-last)/now.Sub(lastAt).Seconds(), total, counts))
				}
				last, lastAt = total, now
			}
		}
	})
	<-loadCtx.Done()
	loadEnd := time.Now()
	bg.Wait()
	if killErr != nil {
		return false, killErr
	}
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	// Let requests in flight finish; hung facilitator calls end now.
	endHangs()
	clients.Wait()
	elapsed := loadEnd.Sub(started)
	drained := time.Since(loadEnd)

	// Channel charges are claimed by the gateway's claimer: with the
	// facilitator's faults off, give it time for passes that claim (and,
	// after a SIGKILL, journal) everything charged.
	if chans != nil {
		fac.calm.Store(true)
		wait := 3*cfg.claimInterval + time.Second
		fmt.Fprintf(out, "\nchannels: faults off, waiting %s for the gateway's claimer\n", wait)
		time.Sleep(wait)
	}

	// Stop the gateway gracefully, so the store is quiescent, then make
	// sure the facilitator has finished every call it was given.
	crashed := gw.exited()
	if err := gw.stop(30 * time.Second); err != nil && !crashed {
		fmt.Fprintf(out, "warning: stopping the gateway: %v\n", err)
	}
	fac.Wait()

	obs := rec.observations()
	fmt.Fprintf(out, "\nrun: %s of load (+%s draining), %d requests, %.1f req/s, %d SIGKILL restarts\n",
		elapsed.Round(time.Millisecond), drained.Round(time.Millisecond), len(obs), float64(len(obs))/elapsed.Seconds(), len(kills))
	printSummary(out, obs, elapsed)
	printFaults(out, up.stats(), fac.Counts())
	if crashed {
		fmt.Fprintln(out, "\nthe gateway exited on its own during the run (see server.log)")
	}

	// Invariants.
	in := checkInput{Tenants: limits, Settles: fac.Settles(), Obs: obs, Kills: kills, StrictCrash: cfg.strictCrash, AuditRecords: -1}
	checkCtx, cancelCheck := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancelCheck()
	if store != "memory" {
		in.Chains = append(in.Chains, verifyChain(checkCtx, bin, store))
	}
	entries, chain, err := readLedger(checkCtx, store)
	var chanEntries []ledger.Entry
	switch {
	case err == nil:
		// Channel entries are checked by checkChannels; the per-request
		// checks see the settlements.
		var settlements []ledger.Entry
		for _, e := range entries {
			switch {
			case !isChannelEntry(e):
				settlements = append(settlements, e)
			default:
				if _, ours := limits[e.Tenant]; ours {
					chanEntries = append(chanEntries, e)
				}
			}
		}
		in.Ledger, in.LedgerRead = settlements, true
		in.Chains = append(in.Chains, chain)
		in.AuditRecords = chain.Records
		fmt.Fprintf(out, "\nledger: %d entries (%s)\n", len(entries), statusCounts(entries))
	case errors.Is(err, errNoLedger):
		fmt.Fprintf(out, "\nledger: not read (%v); ledger-side checks are skipped\n", err)
	default:
		return false, fmt.Errorf("reading the ledger: %w", err)
	}
	results := checkInvariants(in)
	if chans != nil {
		results = append(results, checkChannels(channelInput(checkCtx, chans, fac, kvURL, chanEntries, in.LedgerRead, kills, cfg.strictCrash, out))...)
	}
	if hostile != nil {
		results = append(results, hostile.checks(in)...)
	}
	passed = printChecks(out, results) && !crashed
	return passed, nil
}

func printFaults(w io.Writer, up map[string]int64, fac map[string]int64) {
	fmt.Fprintf(w, "\nupstream worker: %d requests, %d slow, %d answered 500, %d connections reset\n", up["requests"], up["slow"], up["500"], up["reset"])
	keys := make([]string, 0, len(fac))
	for k := range fac {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintln(w, "facilitator:")
	for _, k := range keys {
		fmt.Fprintf(w, "  %-48s %d\n", k, fac[k])
	}
}

// ratioCommand runs "loadgen ratio" (see ratio.go).
func ratioCommand(args []string) {
	cfg, err := parseRatioFlags(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen ratio:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runRatio(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen ratio:", err)
		os.Exit(1)
	}
}

// paidCommand runs "loadgen paid" (see paid.go).
func paidCommand(args []string) {
	cfg, err := parsePaidFlags(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen paid:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runPaid(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen paid:", err)
		os.Exit(1)
	}
}
