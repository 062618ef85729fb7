package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestEndToEnd runs the harness for a few seconds against the real server,
// with faults and two SIGKILL restarts, on SQLite. It builds the server
// unless LOADGEN_SERVER names a built binary. Skipped with -short.
func TestEndToEnd(t *testing.T) {
	ctx, bin := serverBinary(t, "end-to-end run of the gateway; skipped with -short")
	cfg := defaultConfig()
	cfg.server = bin
	cfg.workDir = t.TempDir()
	cfg.duration = 5 * time.Second
	cfg.concurrency = 8
	cfg.killEvery = 2 * time.Second
	cfg.freeTenants, cfg.paidTenants = 5, 5
	cfg.quiet = true
	// Heavier faults than the default, so a short run sees each kind.
	cfg.worker.Fail, cfg.worker.Reset = 0.05, 0.03
	cfg.fac.SettleFail, cfg.fac.Settle5xx = 0.05, 0.03

	var out bytes.Buffer
	ok, err := run(ctx, cfg, &out)
	t.Log(out.String())
	require.NoError(t, err)
	require.True(t, ok, "money invariants breached")
	s := out.String()
	for _, want := range []string{"SIGKILLed the gateway", "paid", "402 challenge", "[PASS] audit chain verifies"} {
		require.Contains(t, s, want)
	}
	require.NotContains(t, s, "[FAIL]")
}

// TestChannelsEndToEnd runs the channel mix for a few seconds against the
// real server, with faults and two SIGKILL restarts, on SQLite, and
// requires every channel invariant to pass. Skipped with -short.
func TestChannelsEndToEnd(t *testing.T) {
	ctx, bin := serverBinary(t, "end-to-end run of the gateway; skipped with -short")
	cfg := defaultConfig()
	cfg.server = bin
	cfg.workDir = t.TempDir()
	cfg.duration = 6 * time.Second
	cfg.concurrency = 2
	cfg.killEvery = 2500 * time.Millisecond
	cfg.freeTenants, cfg.paidTenants = 1, 1
	cfg.mix, cfg.chanPayers = mixChannels, 6
	cfg.claimInterval = time.Second
	cfg.quiet = true

	var out bytes.Buffer
	ok, err := run(ctx, cfg, &out)
	t.Log(out.String())
	require.NoError(t, err)
	require.True(t, ok, "money invariants breached")
	s := out.String()
	for _, want := range []string{"SIGKILLed the gateway", outChanCharged, "[PASS] channels: Σ charge entries", "[PASS] channels: Σ claim entries"} {
		require.Contains(t, s, want)
	}
	require.NotContains(t, s, "[FAIL]")
}

// serverBinary skips the test with -short (saying why) and returns a
// context bounded at three minutes and the example server's binary:
// LOADGEN_SERVER when set, else one built into a temporary directory.
func serverBinary(t *testing.T, why string) (context.Context, string) {
	t.Helper()
	if testing.Short() {
		t.Skip(why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	bin := os.Getenv("LOADGEN_SERVER")
	if bin == "" {
		var err error
		bin, err = buildServer(ctx, t.TempDir(), io.Discard)
		require.NoError(t, err)
	}
	return ctx, bin
}
