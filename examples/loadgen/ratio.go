package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync/atomic"
	"syscall"
	"time"
)

// The ratio mode measures the example server's overhead as DESIGN section
// 18 states it: free requests through the gateway on a given store, versus
// a bare httputil.ReverseProxy to the same upstream, the same number of
// connections, both sides in one run. The two targets run as separate
// processes (the gateway binary; this binary re-executed as the bare
// proxy) and are measured in alternating rounds, so drift in the machine's
// load hits both sides alike; the ratio is of the summed throughputs.
//
//	go run ./examples/loadgen ratio -store sqlite:/tmp/r/gw.db
//	go run ./examples/loadgen ratio -store memory
type ratioConfig struct {
	server      string
	store, kv   string
	concurrency int
	rounds      int
	round       time.Duration
	warmup      time.Duration
	workDir     string
	callers     int
	// bareCmd makes the bare proxy's process; nil re-executes this binary
	// as "loadgen bare-proxy" (tests substitute their own binary).
	bareCmd func(addr, upstream string) (*exec.Cmd, error)
}

func parseRatioFlags(args []string, stderr io.Writer) (ratioConfig, error) {
	c := ratioConfig{concurrency: 32, rounds: 6, round: 3 * time.Second, warmup: time.Second, callers: 200}
	fs := flag.NewFlagSet("loadgen ratio", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.server, "server", "", "path to a built examples/httpserver binary; empty: build it with go build")
	fs.StringVar(&c.store, "store", "", "gateway -store: memory, sqlite:PATH or postgres://...; empty: sqlite:<workdir>/ratio.db")
	fs.StringVar(&c.kv, "kv", "", "gateway -kv; empty: same as -store")
	fs.IntVar(&c.concurrency, "concurrency", c.concurrency, "connections sending at once, on each side")
	fs.IntVar(&c.rounds, "rounds", c.rounds, "rounds per side, alternating gateway and bare proxy")
	fs.DurationVar(&c.round, "round", c.round, "length of one round")
	fs.DurationVar(&c.warmup, "warmup", c.warmup, "unmeasured load on each side before the first round")
	fs.IntVar(&c.callers, "callers", c.callers, "distinct X-Agent-Id callers the requests cycle through")
	fs.StringVar(&c.workDir, "workdir", "", "directory for the tenant files, the database and the server log; empty: a temporary one")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case c.concurrency <= 0 || c.rounds <= 0 || c.round <= 0 || c.callers <= 0 || c.warmup < 0:
		return c, errors.New("-concurrency, -rounds, -round and -callers must be positive, -warmup not negative")
	}
	return c, nil
}

// ratioTenant is the one free tenant of a ratio run: rate limits far above
// what the run can send, so every request takes the full free path
// (directory, rate limits, usage event, upstream) and none is refused.
const ratioTenant = "ratio-free"

func ratioDirectory() ([]byte, error) {
	huge := map[string]int{"requests": 1_000_000_000, "windowSeconds": 60}
	return json.Marshal(map[string]any{"tenants": []map[string]any{{
		"slug": ratioTenant, "workerName": "ratio-upstream", "plan": "free", "x402Enabled": false,
		"rateLimit": map[string]any{"perCaller": huge, "global": huge},
	}}})
}

// ratioResult is one side's measured rounds.
type ratioResult struct {
	ok, other int64
	elapsed   time.Duration
	rounds    []float64 // requests/s per round
	// cpu is the side's process CPU time over its rounds (from /proc;
	// zero where it cannot be read): on a shared machine the CPU spent
	// per request moves far less with the neighbours' load than
	// throughput does.
	cpu time.Duration
}

// cpuPerRequest is the side's CPU time per answered request, or zero.
func (r *ratioResult) cpuPerRequest() time.Duration {
	if r.ok == 0 {
		return 0
	}
	return r.cpu / time.Duration(r.ok)
}

func (r *ratioResult) rate() float64 { return float64(r.ok) / r.elapsed.Seconds() }

// ratioIPs is how many client addresses the load cycles through (sent as
// X-Forwarded-For from a trusted loopback proxy): enough that the plan's
// per-address rate never refuses while every request still writes its
// counters. (The tenant lifts its own per-caller and global rates.)
const ratioIPs = 20_000

// hammer sends free requests to base from conc connections for d and
// counts the 200s and the rest.
func hammer(ctx context.Context, client *http.Client, base string, conc, callers int, d time.Duration, seq *atomic.Int64) (ok, other int64, elapsed time.Duration) {
	ok, other, elapsed, _ = drive(ctx, client, conc, d, func(ctx context.Context, _ int) (*http.Request, error) {
		i := seq.Add(1)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/t/"+ratioTenant+"/ping", nil)
		req.Header.Set("X-Agent-Id", fmt.Sprintf("caller-%d", i%int64(callers)))
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("198.18.%d.%d", (i%ratioIPs)/250, (i%ratioIPs)%250+1))
		return req, nil
	})
	return ok, other, elapsed
}

func runRatio(ctx context.Context, cfg ratioConfig, out io.Writer) error {
	dir := cfg.workDir
	if dir == "" {
		d, err := os.MkdirTemp("", "loadgen-ratio-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	store := cfg.store
	if store == "" {
		store = "sqlite:" + filepath.Join(dir, "ratio.db")
	}
	kvURL := cfg.kv
	if kvURL == "" {
		kvURL = store
	}

	// The upstream: a trivial answer, in this process, shared by both sides.
	body := []byte(`{"ok":true}`)
	upBase, upSrv, err := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	if err != nil {
		return err
	}
	defer upSrv.Close()

	dirJSON, err := ratioDirectory()
	if err != nil {
		return err
	}
	tenantsFile, workersFile := filepath.Join(dir, "tenants.json"), filepath.Join(dir, "workers.json")
	workersJSON, _ := json.Marshal(map[string]string{"ratio-upstream": upBase})
	if err := os.WriteFile(tenantsFile, dirJSON, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(workersFile, workersJSON, 0o644); err != nil {
		return err
	}

	bin := cfg.server
	if bin == "" {
		if bin, err = buildServer(ctx, dir, out); err != nil {
			return err
		}
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()

	gwAddr, err := freeAddr()
	if err != nil {
		return err
	}
	gw := &gateway{bin: bin, base: "http://" + gwAddr, log: logFile, args: []string{
		"-addr", gwAddr, "-tenants", tenantsFile, "-workers", workersFile, "-store", store, "-kv", kvURL,
		"-admin-token", "ratio", "-trusted-proxies", "127.0.0.0/8",
	}}
	if err := gw.start(ctx); err != nil {
		return err
	}
	defer func() { _ = gw.stop(10 * time.Second) }()

	bareAddr, err := freeAddr()
	if err != nil {
		return err
	}
	makeBare := cfg.bareCmd
	if makeBare == nil {
		makeBare = func(addr, upstream string) (*exec.Cmd, error) {
			self, err := os.Executable()
			if err != nil {
				return nil, err
			}
			return exec.Command(self, "bare-proxy", "-addr", addr, "-upstream", upstream), nil
		}
	}
	bare, err := makeBare(bareAddr, upBase)
	if err != nil {
		return err
	}
	bare.Stdout, bare.Stderr = logFile, logFile
	bare.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := bare.Start(); err != nil {
		return err
	}
	defer func() { _ = bare.Process.Kill(); _ = bare.Wait() }()
	bareBase := "http://" + bareAddr
	if err := waitUp(ctx, bareBase+"/t/"+ratioTenant+"/ping"); err != nil {
		return fmt.Errorf("bare proxy: %w", err)
	}

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 2 * cfg.concurrency, MaxIdleConnsPerHost: 2 * cfg.concurrency, DisableCompression: true,
	}}
	fmt.Fprintf(out, "ratio: store %s kv %s, %d connections, %d rounds of %s per side\n",
		store, kvURL, cfg.concurrency, cfg.rounds, cfg.round)
	var seq atomic.Int64
	for _, base := range []string{gw.base, bareBase} {
		if _, other, _ := hammer(ctx, client, base, cfg.concurrency, cfg.callers, cfg.warmup, &seq); other > 0 && base == gw.base {
			fmt.Fprintf(out, "  warm-up: %d non-200 answers from the gateway\n", other)
		}
	}
	sides := map[string]*ratioResult{"gateway": {}, "bare": {}}
	for r := 0; r < cfg.rounds; r++ {
		order := []string{"gateway", "bare"}
		if r%2 == 1 {
			order = []string{"bare", "gateway"}
		}
		for _, side := range order {
			base := gw.base
			if side == "bare" {
				base = bareBase
			}
			pid := bare.Process.Pid
			if side == "gateway" {
				pid = gatewayPID(gw)
			}
			cpu0, cpuErr := procCPU(pid)
			ok, other, el := hammer(ctx, client, base, cfg.concurrency, cfg.callers, cfg.round, &seq)
			if err := ctx.Err(); err != nil {
				return err
			}
			res := sides[side]
			res.ok, res.other, res.elapsed = res.ok+ok, res.other+other, res.elapsed+el
			if cpu1, err := procCPU(pid); err == nil && cpuErr == nil {
				res.cpu += cpu1 - cpu0
			}
			res.rounds = append(res.rounds, float64(ok)/el.Seconds())
		}
	}
	g, b := sides["gateway"], sides["bare"]
	fmt.Fprintf(out, "  gateway: %8.0f req/s  (%d ok, %d other; rounds median %.0f)\n", g.rate(), g.ok, g.other, median(g.rounds))
	fmt.Fprintf(out, "  bare:    %8.0f req/s  (%d ok, %d other; rounds median %.0f)\n", b.rate(), b.ok, b.other, median(b.rounds))
	if g.cpu > 0 && b.cpu > 0 {
		fmt.Fprintf(out, "  CPU per request: gateway %.1f µs, bare %.1f µs (ratio %.2f)\n",
			float64(g.cpuPerRequest())/1e3, float64(b.cpuPerRequest())/1e3, float64(g.cpuPerRequest())/float64(b.cpuPerRequest()))
	}
	fmt.Fprintf(out, "RATIO %.3f (gateway/bare, store %s, kv %s)\n", g.rate()/b.rate(), store, kvURL)
	if g.other > 0 || b.other > 0 {
		return fmt.Errorf("%d gateway and %d bare answers were not 200: the ratio does not measure the free path", g.other, b.other)
	}
	return nil
}

// gatewayPID is the running gateway's process id.
func gatewayPID(g *gateway) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cmd.Process.Pid
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// waitUp polls u until it answers 200.
func waitUp(ctx context.Context, u string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("not answering within 30s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// bareProxyMain is the bare side of the ratio mode: an
// httputil.ReverseProxy to -upstream on -addr, nothing else.
func bareProxyMain(args []string) error {
	fs := flag.NewFlagSet("loadgen bare-proxy", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	upstream := fs.String("upstream", "", "upstream base URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	target, err := url.Parse(*upstream)
	if err != nil || target.Host == "" {
		return fmt.Errorf("-upstream %q is not a URL", *upstream)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, DisableCompression: true}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}
