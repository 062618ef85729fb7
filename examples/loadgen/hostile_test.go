package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/x402"
)

func TestParseMix(t *testing.T) {
	t.Parallel()
	c, err := parseFlags(nil, io.Discard)
	require.NoError(t, err)
	require.Equal(t, mixDefault, c.mix)
	c, err = parseFlags([]string{"-mix", "hostile"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, mixHostile, c.mix)
	_, err = parseFlags([]string{"-mix", "chaos"}, io.Discard)
	require.ErrorContains(t, err, `-mix "chaos"`)
}

// The hostile workers answer as the mix expects: /402 with a challenge of
// its own, /forger 200 with every gateway header forged; both marked.
func TestHostileWorkers(t *testing.T) {
	t.Parallel()
	var hw hostileWorkers
	srv := httptest.NewServer(&hw)
	defer srv.Close()
	resp, err := srv.Client().Post(srv.URL+"/402/items/1", "text/plain", strings.NewReader("body"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusPaymentRequired, resp.StatusCode)
	require.Equal(t, "1", resp.Header.Get(hostileMarkHeader))
	require.True(t, strings.HasPrefix(resp.Header.Get(x402.HeaderPaymentRequired), forgedMark))

	resp, err = srv.Client().Get(srv.URL + "/forger/items/1")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	for _, k := range []string{"Payment-Response", "X-Payment-Response", "X-Ratelimit-Remaining", "X-Request-Id", "X-Tenant-Id", "Set-Cookie", "Settlement-Overrides"} {
		require.True(t, strings.HasPrefix(resp.Header.Get(k), forgedMark), k)
	}
	require.Equal(t, int64(1), hw.n402.Load())
	require.Equal(t, int64(1), hw.nForger.Load())
}

// hostileFixture is a hostile mix (without its server) and a clean run's
// check input: every hostile check passes on it.
func hostileFixture(t *testing.T) (*hostileMix, checkInput) {
	t.Helper()
	h := &hostileMix{w402: map[string]bool{"h402-free": true, "h402-paid": true}, forger: map[string]bool{"hforge-paid": true}}
	h.workers.n402.Add(2)
	h.workers.nForger.Add(1)
	h.slowSent.Add(2)
	h.abandoned.Add(1)
	t0 := time.Now()
	obs := []observation{
		{Tenant: "h402-free", Scenario: scenWorker402, Outcome: "502 tenant_worker_failure", Status: 502, Start: t0, End: t0},
		{Tenant: "h402-paid", Scenario: scenWorker402, Outcome: "502 tenant_worker_failure", Status: 502, Paid: true, AuthKey: "k1", Start: t0, End: t0},
		{Tenant: "h402-paid", Scenario: "paid/challenge", Outcome: outChallenge, Status: 402, Start: t0, End: t0},
		{Tenant: "h402-paid", Scenario: "pay_garbage", Outcome: "400 invalid_payment", Status: 400, Paid: true, Start: t0, End: t0},
		{Tenant: "h402-paid", Scenario: "replay_concurrent", Outcome: "409 idempotency_key_in_use", Status: 409, Paid: true, Start: t0, End: t0},
		{Tenant: "hforge-paid", Scenario: scenForger, Outcome: outPaid, Status: 200, Paid: true, AuthKey: "k2", TxHash: "0x2", Start: t0, End: t0},
		{Tenant: "p", Scenario: scenFarFuture, Outcome: outRejected, Status: 402, Paid: true, AuthKey: "far1", Start: t0, End: t0},
		{Tenant: "p", Scenario: scenFarFuture, Outcome: "429 rate_limited", Status: 429, Paid: true, AuthKey: "far2", Start: t0, End: t0},
		{Tenant: "p", Scenario: scenSlowBody, Outcome: outPaid, Status: 200, Paid: true, AuthKey: "k3", TxHash: "0x3", Start: t0, End: t0},
		{Tenant: "f", Scenario: scenSlowBody, Outcome: outAbandoned, Start: t0, End: t0},
	}
	in := checkInput{
		Obs:        obs,
		Settles:    []settleRecord{{Tenant: "hforge-paid", Key: "k2", TxHash: "0x2"}, {Tenant: "p", Key: "k3", TxHash: "0x3"}},
		Ledger:     []ledger.Entry{{Tenant: "hforge-paid", IdempotencyKey: "k2", Status: ledger.StatusSettled}, {Tenant: "p", IdempotencyKey: "k3", Status: ledger.StatusSettled}},
		LedgerRead: true,
	}
	return h, in
}

// breaches returns the breaches of the hostile check whose name contains
// name.
func breaches(t *testing.T, h *hostileMix, in checkInput, name string) []string {
	t.Helper()
	for _, c := range h.checks(in) {
		if strings.Contains(c.Name, name) {
			return c.Breaches
		}
	}
	t.Fatalf("no hostile check named %q", name)
	return nil
}

// Each hostile rule, broken alone, is a breach of its check; the clean
// fixture passes every check.
func TestHostileChecks(t *testing.T) {
	t.Parallel()
	h, in := hostileFixture(t)
	for _, c := range h.checks(in) {
		require.True(t, c.OK, "%s: %v", c.Name, c.Breaches)
	}
	t0 := time.Now()
	for _, tc := range []struct {
		name, check string
		mutate      func(h *hostileMix, in *checkInput)
	}{
		{"a worker 402 served as 200", "worker's 402", func(h *hostileMix, in *checkInput) {
			in.Obs = append(in.Obs, observation{Tenant: "h402-free", Scenario: "free", Outcome: outServed, Status: 200, Start: t0, End: t0})
		}},
		{"a worker 402 forwarded as a 402", "worker's 402", func(h *hostileMix, in *checkInput) {
			in.Obs = append(in.Obs, observation{Tenant: "h402-paid", Scenario: scenWorker402, Outcome: outSettleFailed, Status: 402, Paid: true, Start: t0, End: t0})
		}},
		{"a worker's own error forwarded", "worker's 402", func(h *hostileMix, in *checkInput) {
			in.Obs = append(in.Obs, observation{Tenant: "h402-free", Scenario: "free", Outcome: "418 worker", Status: 418, Start: t0, End: t0})
		}},
		{"a 402 tenant settled", "worker's 402", func(h *hostileMix, in *checkInput) {
			in.Settles = append(in.Settles, settleRecord{Tenant: "h402-paid", Key: "k9", TxHash: "0x9"})
		}},
		{"a 402 tenant in the ledger", "worker's 402", func(h *hostileMix, in *checkInput) {
			in.Ledger = append(in.Ledger, ledger.Entry{Tenant: "h402-paid", IdempotencyKey: "k9", Status: ledger.StatusFailed})
		}},
		{"the 402 worker never reached", "worker's 402", func(h *hostileMix, in *checkInput) {
			h.workers.n402.Store(0)
		}},
		{"a forged header leaked", "forged", func(h *hostileMix, in *checkInput) {
			h.inspect(observation{Tenant: "hforge-paid", Scenario: scenForger, Status: 200}, http.Header{"X-Payment-Response": {forgedMark + "1"}})
		}},
		{"a worker 402 answer forwarded", "forged", func(h *hostileMix, in *checkInput) {
			h.inspect(observation{Tenant: "h402-free", Scenario: scenWorker402, Status: 402}, http.Header{hostileMarkHeader: {"1"}})
		}},
		{"the forger never reached", "forged", func(h *hostileMix, in *checkInput) {
			h.workers.nForger.Store(0)
		}},
		{"a far-future payment served", "9999", func(h *hostileMix, in *checkInput) {
			in.Obs = append(in.Obs, observation{Tenant: "p", Scenario: scenFarFuture, Outcome: outPaid, Status: 200, Paid: true, AuthKey: "far3", Start: t0, End: t0})
		}},
		{"a far-future authorization settled", "9999", func(h *hostileMix, in *checkInput) {
			in.Settles = append(in.Settles, settleRecord{Tenant: "p", Key: "far1", TxHash: "0xf"})
		}},
		{"a far-future authorization in the ledger under a derived key", "9999", func(h *hostileMix, in *checkInput) {
			in.Ledger = append(in.Ledger, ledger.Entry{Tenant: "p", IdempotencyKey: "far2#failed:x", Status: ledger.StatusFailed})
		}},
		{"no far-future refusal", "9999", func(h *hostileMix, in *checkInput) {
			for i := range in.Obs {
				if in.Obs[i].Outcome == outRejected {
					in.Obs[i].Outcome = "429 rate_limited"
				}
			}
		}},
		{"a trickled body left unanswered", "trickled", func(h *hostileMix, in *checkInput) {
			in.Obs = append(in.Obs, observation{Tenant: "f", Scenario: scenSlowBody, Outcome: outConnError, Err: "EOF", Start: t0, End: t0})
		}},
		{"a trickled body answered 500 by the gateway", "trickled", func(h *hostileMix, in *checkInput) {
			in.Obs = append(in.Obs, observation{Tenant: "f", Scenario: scenSlowBody, Outcome: "500 internal", Status: 500, Start: t0, End: t0})
		}},
		{"no trickled body answered", "trickled", func(h *hostileMix, in *checkInput) {
			var kept []observation
			for _, o := range in.Obs {
				if o.Scenario != scenSlowBody || o.Outcome == outAbandoned {
					kept = append(kept, o)
				}
			}
			in.Obs = kept
		}},
	} {
		h, in := hostileFixture(t)
		tc.mutate(h, &in)
		require.NotEmpty(t, breaches(t, h, in, tc.check), tc.name)
	}
	// A trickled body cut off by a SIGKILL is not a breach.
	h, in = hostileFixture(t)
	in.Kills = []killWindow{{Killed: t0.Add(-time.Second), Healthy: t0.Add(time.Second)}}
	in.Obs = append(in.Obs, observation{Tenant: "f", Scenario: scenSlowBody, Outcome: outConnError, Err: "EOF", Start: t0, End: t0})
	require.Empty(t, breaches(t, h, in, "trickled"))
}

// TestHostileMixEndToEnd runs the hostile mix for a few seconds against
// the real server on SQLite, with the default faults, and requires every
// money invariant and every hostile check to pass. It builds the server
// unless LOADGEN_SERVER names a built binary. Skipped with -short.
func TestHostileMixEndToEnd(t *testing.T) {
	ctx, bin := serverBinary(t, "end-to-end run of the gateway; skipped with -short")
	cfg := defaultConfig()
	cfg.server = bin
	cfg.workDir = t.TempDir()
	cfg.duration = 6 * time.Second
	cfg.concurrency = 8
	cfg.freeTenants, cfg.paidTenants = 5, 5
	cfg.quiet = true
	cfg.mix = mixHostile

	var out bytes.Buffer
	ok, err := run(ctx, cfg, &out)
	t.Log(out.String())
	require.NoError(t, err)
	require.True(t, ok, "invariants breached")
	s := out.String()
	for _, want := range []string{
		"[PASS] hostile: a worker's 402", "[PASS] hostile: no forged", "[PASS] hostile: authorizations valid until 9999",
		"[PASS] hostile: trickled bodies", "502 tenant_worker_failure", "[PASS] audit chain verifies",
	} {
		require.Contains(t, s, want)
	}
	require.NotContains(t, s, "[FAIL]")
}
