package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/tenant"
)

func TestRatioDirectoryIsOneFreeTenantWithLiftedRates(t *testing.T) {
	t.Parallel()
	raw, err := ratioDirectory()
	require.NoError(t, err)
	d, err := tenant.ParseDirectory(raw)
	require.NoError(t, err)
	tn, ok := d.Lookup(ratioTenant)
	require.True(t, ok)
	require.Equal(t, "free", tn.Plan)
	require.False(t, tn.X402Enabled)
	require.EqualValues(t, 1_000_000_000, tn.RateLimit.PerCaller.Requests)
	require.EqualValues(t, 1_000_000_000, tn.RateLimit.Global.Requests)
}

func TestRatioAndPaidFlags(t *testing.T) {
	t.Parallel()
	c, err := parseRatioFlags(nil, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 32, c.concurrency, "the issue's 32 connections by default")
	for _, bad := range [][]string{{"-concurrency", "0"}, {"-rounds", "0"}, {"-round", "0s"}, {"-callers", "0"}, {"extra"}} {
		_, err := parseRatioFlags(bad, io.Discard)
		require.Error(t, err, "%v", bad)
	}
	p, err := parsePaidFlags([]string{"-b", "sqlite:/x.db"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "memory", p.a)
	require.Equal(t, "sqlite:/x.db", p.b)
	_, err = parsePaidFlags([]string{"-rounds", "-1"}, io.Discard)
	require.Error(t, err)
}

// hammer counts exactly the 200s and the rest.
func TestHammerCountsAnswers(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "/t/"+ratioTenant+"/ping", r.URL.Path)
		require.NotEmpty(t, r.Header.Get("X-Agent-Id"))
		require.NotEmpty(t, r.Header.Get("X-Forwarded-For"))
		if n.Add(1)%3 == 0 {
			w.WriteHeader(http.StatusTooManyRequests)
		}
	}))
	defer srv.Close()
	var seq atomic.Int64
	ok, other, el := hammer(context.Background(), srv.Client(), srv.URL, 4, 10, 300*time.Millisecond, &seq)
	require.Positive(t, ok)
	require.Positive(t, other)
	require.InDelta(t, float64(n.Load()), float64(ok+other), 4, "requests cut by the deadline are not counted")
	require.GreaterOrEqual(t, el, 300*time.Millisecond)
}

func TestProcCPUGrows(t *testing.T) {
	t.Parallel()
	before, err := procCPU(os.Getpid())
	require.NoError(t, err)
	x := 0
	for start := time.Now(); time.Since(start) < 200*time.Millisecond; {
		x++
	}
	after, err := procCPU(os.Getpid())
	require.NoError(t, err)
	require.Greater(t, after, before, "spinning 200ms shows in /proc (%d)", x)
	_, err = procCPU(-1)
	require.Error(t, err)
}

const envBareChild = "LOADGEN_TEST_BARE_PROXY"

// TestBareProxyChild is the bare proxy when the ratio test starts this
// test binary as its child; it does nothing in a normal run.
func TestBareProxyChild(t *testing.T) {
	args := os.Getenv(envBareChild)
	if args == "" {
		t.Skip("only runs as the bare proxy of TestRatioAndPaidEndToEnd")
	}
	addr, upstream, _ := cutTab(args)
	require.NoError(t, bareProxyMain([]string{"-addr", addr, "-upstream", upstream}))
}

func cutTab(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '\t' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// TestRatioAndPaidEndToEnd runs both modes briefly against the real server
// (built, or LOADGEN_SERVER): the ratio on memory, the paid comparison of
// memory and SQLite. Skipped with -short.
func TestRatioAndPaidEndToEnd(t *testing.T) {
	ctx, bin := serverBinary(t, "end-to-end runs of the gateway; skipped with -short")
	var out bytes.Buffer
	err := runRatio(ctx, ratioConfig{
		server: bin, store: "memory", concurrency: 4, rounds: 1, round: 500 * time.Millisecond, callers: 10,
		workDir: t.TempDir(),
		bareCmd: func(addr, upstream string) (*exec.Cmd, error) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestBareProxyChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), envBareChild+"="+addr+"\t"+upstream)
			return cmd, nil
		},
	}, &out)
	t.Log(out.String())
	require.NoError(t, err)
	require.Contains(t, out.String(), "RATIO ")
	require.Contains(t, out.String(), "CPU per request: gateway ", "each side's CPU from /proc")

	out.Reset()
	err = runPaid(ctx, paidConfig{
		server: bin, a: "memory", concurrency: 4, rounds: 1, round: time.Second, workDir: t.TempDir(),
	}, &out)
	t.Log(out.String())
	require.NoError(t, err)
	require.Contains(t, out.String(), "PAID CPU RATIO ")
}
