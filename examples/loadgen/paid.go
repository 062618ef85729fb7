package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

// The paid mode compares paid requests on two stores in one run: the same
// example server binary twice, once per store, behind the same facilitator
// double that answers verify and settle at once, measured in alternating
// rounds. Every request carries a fresh payment (a new EIP-3009
// authorization), so each one verifies, settles, writes its idempotency
// record, its counters and its ledger entry with audit record. It prints
// each side's throughput and the gateway process's CPU time per paid
// request (from /proc), and their ratios.
//
//	go run ./examples/loadgen paid -a memory -b sqlite:/tmp/p/gw.db
type paidConfig struct {
	server      string
	a, b        string // -store of the two sides (-kv follows -store)
	concurrency int
	rounds      int
	round       time.Duration
	warmup      time.Duration
	workDir     string
}

func parsePaidFlags(args []string, stderr io.Writer) (paidConfig, error) {
	c := paidConfig{a: "memory", concurrency: 32, rounds: 4, round: 3 * time.Second, warmup: time.Second}
	fs := flag.NewFlagSet("loadgen paid", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.server, "server", "", "path to a built examples/httpserver binary; empty: build it with go build")
	fs.StringVar(&c.a, "a", c.a, "-store (and -kv) of the reference side")
	fs.StringVar(&c.b, "b", "", "-store (and -kv) of the measured side; empty: sqlite:<workdir>/paid.db")
	fs.IntVar(&c.concurrency, "concurrency", c.concurrency, "connections sending at once")
	fs.IntVar(&c.rounds, "rounds", c.rounds, "rounds per side, alternating")
	fs.DurationVar(&c.round, "round", c.round, "length of one round")
	fs.DurationVar(&c.warmup, "warmup", c.warmup, "unmeasured load on each side first")
	fs.StringVar(&c.workDir, "workdir", "", "directory for the files, the database and the server logs; empty: a temporary one")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case c.concurrency <= 0 || c.rounds <= 0 || c.round <= 0 || c.warmup < 0:
		return c, errors.New("-concurrency, -rounds and -round must be positive, -warmup not negative")
	}
	return c, nil
}

const paidTenant = "paid-bench"

// procCPU returns the CPU time (user and system) process pid has used.
func procCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields are counted after
	// its closing parenthesis; utime and stime are fields 14 and 15.
	rest := string(raw[strings.LastIndexByte(string(raw), ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz, nil
}

// paidSide is one gateway of a paid run and what was measured on it.
type paidSide struct {
	name    string
	gw      *gateway
	req     x402.Requirement
	ok      int64
	other   int64
	elapsed time.Duration
	cpu     time.Duration
}

func (p *paidSide) pid() int {
	p.gw.mu.Lock()
	defer p.gw.mu.Unlock()
	return p.gw.cmd.Process.Pid
}

// challenge fetches the tenant's payment requirement from a 402.
func challenge(client *http.Client, base string) (x402.Requirement, error) {
	resp, err := client.Get(base + "/t/" + paidTenant + "/ping")
	if err != nil {
		return x402.Requirement{}, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPaymentRequired {
		return x402.Requirement{}, fmt.Errorf("challenge: status %d, want 402", resp.StatusCode)
	}
	pr, err := x402.DecodePaymentRequired(resp.Header.Get(x402.HeaderPaymentRequired))
	if err != nil || len(pr.Accepts) == 0 {
		return x402.Requirement{}, fmt.Errorf("challenge: %v", err)
	}
	return x402.RequirementFromV2(pr.Accepts[0], pr.Resource), nil
}

// payLoad sends freshly paid requests to side for d from conc connections.
func payLoad(ctx context.Context, client *http.Client, side *paidSide, signers []*localfacilitator.Signer, conc int, d time.Duration) (ok, other int64, elapsed time.Duration, err error) {
	return drive(ctx, client, conc, d, func(ctx context.Context, c int) (*http.Request, error) {
		sp, err := signers[c%len(signers)].Sign(side.req, 2, localfacilitator.SignOptions{})
		if err != nil {
			return nil, err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, side.gw.base+"/t/"+paidTenant+"/ping", nil)
		req.Header.Set(sp.Header, sp.Value)
		req.Header.Set("X-Agent-Id", fmt.Sprintf("payer-%d", c))
		return req, nil
	})
}

func runPaid(ctx context.Context, cfg paidConfig, out io.Writer) error {
	dir := cfg.workDir
	if dir == "" {
		d, err := os.MkdirTemp("", "loadgen-paid-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if cfg.b == "" {
		cfg.b = "sqlite:" + filepath.Join(dir, "paid.db")
	}
	upBase, upSrv, err := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	if err != nil {
		return err
	}
	defer upSrv.Close()
	stop := make(chan struct{})
	defer close(stop)
	fac, err := newFaultyFacilitator(facilitatorFaults{}, stop) // no faults: answers at once
	if err != nil {
		return err
	}
	facBase, facSrv, err := serve(fac)
	if err != nil {
		return err
	}
	defer facSrv.Close()

	huge := map[string]int{"requests": 1_000_000_000, "windowSeconds": 60}
	dirJSON, _ := json.Marshal(map[string]any{"tenants": []map[string]any{{
		"slug": paidTenant, "workerName": "paid-upstream", "plan": "enterprise", "priceUsd": "0.001",
		"x402Enabled": true, "rateLimit": map[string]any{"perCaller": huge, "global": huge},
	}}})
	workersJSON, _ := json.Marshal(map[string]string{"paid-upstream": upBase})
	tenantsFile, workersFile := filepath.Join(dir, "tenants.json"), filepath.Join(dir, "workers.json")
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
	payTo, err := localfacilitator.GenerateSigner()
	if err != nil {
		return err
	}
	signers := make([]*localfacilitator.Signer, 8)
	for i := range signers {
		if signers[i], err = localfacilitator.GenerateSigner(); err != nil {
			return err
		}
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 2 * cfg.concurrency, MaxIdleConnsPerHost: 2 * cfg.concurrency, DisableCompression: true,
	}}
	var sides []*paidSide
	for i, store := range []string{cfg.a, cfg.b} {
		logFile, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("server-%d.log", i)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer logFile.Close()
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		gw := &gateway{bin: bin, base: "http://" + addr, log: logFile, args: []string{
			"-addr", addr, "-tenants", tenantsFile, "-workers", workersFile, "-store", store, "-kv", store,
			"-facilitator-url", facBase, "-pay-to", payTo.Address(), "-admin-token", "paid",
		}}
		if err := gw.start(ctx); err != nil {
			return fmt.Errorf("%s: %w", store, err)
		}
		defer func() { _ = gw.stop(10 * time.Second) }()
		side := &paidSide{name: store, gw: gw}
		if side.req, err = challenge(client, gw.base); err != nil {
			return fmt.Errorf("%s: %w", store, err)
		}
		sides = append(sides, side)
	}
	fmt.Fprintf(out, "paid: %s vs %s, %d connections, %d rounds of %s per side, facilitator answering at once\n",
		cfg.a, cfg.b, cfg.concurrency, cfg.rounds, cfg.round)
	for _, s := range sides {
		if _, _, _, err := payLoad(ctx, client, s, signers, cfg.concurrency, cfg.warmup); err != nil {
			return err
		}
	}
	for r := 0; r < cfg.rounds; r++ {
		order := []*paidSide{sides[0], sides[1]}
		if r%2 == 1 {
			order = []*paidSide{sides[1], sides[0]}
		}
		for _, s := range order {
			cpu0, err := procCPU(s.pid())
			if err != nil {
				return err
			}
			ok, other, el, err := payLoad(ctx, client, s, signers, cfg.concurrency, cfg.round)
			if err != nil {
				return err
			}
			cpu1, err := procCPU(s.pid())
			if err != nil {
				return err
			}
			s.ok, s.other, s.elapsed, s.cpu = s.ok+ok, s.other+other, s.elapsed+el, s.cpu+cpu1-cpu0
		}
	}
	rate := func(s *paidSide) float64 { return float64(s.ok) / s.elapsed.Seconds() }
	cpuPer := func(s *paidSide) float64 { return float64(s.cpu.Microseconds()) / float64(max(s.ok, 1)) }
	for _, s := range sides {
		fmt.Fprintf(out, "  %-40s %7.0f paid req/s  %6.0f us CPU/paid request  (%d ok, %d other)\n",
			s.name, rate(s), cpuPer(s), s.ok, s.other)
	}
	fmt.Fprintf(out, "PAID THROUGHPUT RATIO %.3f (b/a)\nPAID CPU RATIO %.3f (b/a)\n",
		rate(sides[1])/rate(sides[0]), cpuPer(sides[1])/cpuPer(sides[0]))
	if sides[0].other > 0 || sides[1].other > 0 {
		return fmt.Errorf("%d and %d answers were not 200: the run does not measure the paid path", sides[0].other, sides[1].other)
	}
	return nil
}
