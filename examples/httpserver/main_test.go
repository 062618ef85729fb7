package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

func testConfig(t *testing.T, args ...string) config {
	t.Helper()
	c, err := parseConfig(args, func(string) string { return "" }, io.Discard)
	require.NoError(t, err)
	return c
}

func TestParseConfigDefaultsAndEnv(t *testing.T) {
	t.Parallel()
	c := testConfig(t)
	require.Equal(t, "127.0.0.1:8402", c.addr)
	require.Equal(t, "sqlite:./data/dispatcher.db", c.store)
	require.Equal(t, c.store, c.kv, "-kv defaults to -store")
	require.Equal(t, "eip155:84532", c.network)
	env := map[string]string{
		"ADDR": "127.0.0.1:9", "STORE_URL": "memory", "KV_URL": "redis://127.0.0.1:6379/3",
		"X402_FACILITATOR_URL": "http://fac", "FACILITATOR_API_KEY": "k", "PAY_TO_ADDRESS": "0x1111111111111111111111111111111111111111",
		"X402_NETWORK": "eip155:8453", "PLATFORM_ADMIN_TOKEN": "tok", "TENANT_DIRECTORY_JSON": `{"tenants":[]}`,
		"TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
	}
	c, err := parseConfig(nil, func(k string) string { return env[k] }, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:9", c.addr)
	require.Equal(t, "memory", c.store)
	require.Equal(t, "redis://127.0.0.1:6379/3", c.kv)
	require.Equal(t, "http://fac", c.facilitatorURL)
	require.Equal(t, "k", c.facilitatorAPIKey)
	require.Equal(t, "eip155:8453", c.network)
	require.Equal(t, "tok", c.adminToken)
	require.Equal(t, `{"tenants":[]}`, c.tenantsJSON)
	require.Len(t, c.trustedProxies, 2)
	// Flags win over the environment.
	c, err = parseConfig([]string{"-store", "sqlite:x.db", "-network", "base"}, func(k string) string { return env[k] }, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "sqlite:x.db", c.store)
	for _, bad := range [][]string{{"-network", "solana"}, {"-trusted-proxies", "nope"}, {"extra"}, {"-drain-timeout", "0"}, {"-pay-to", "not-an-address"}, {"-bogus"}} {
		_, err := parseConfig(bad, func(string) string { return "" }, io.Discard)
		require.Error(t, err, bad)
	}
}

func TestBadTenantsFileIsAOneLineError(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "tenants.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"tenants":[{"slug":"a","workerName":"w","priceUsd":"-1"}]}`), 0o644))
	c := testConfig(t, "-store", "memory", "-tenants", path, "-addr", "127.0.0.1:0")
	err := run(context.Background(), c, io.Discard, slog.New(slog.DiscardHandler))
	require.Error(t, err)
	msg := oneLine(err)
	require.NotContains(t, msg, "\n")
	require.Contains(t, msg, `tenant "a"`)
	require.Contains(t, msg, "priceUsd")
	c = testConfig(t, "-store", "memory", "-tenants", filepath.Join(t.TempDir(), "missing.json"))
	require.Error(t, run(context.Background(), c, io.Discard, slog.New(slog.DiscardHandler)))
	c = testConfig(t, "-store", "mysql://x")
	require.ErrorContains(t, run(context.Background(), c, io.Discard, slog.New(slog.DiscardHandler)), "-store")
}

func TestDemoEndToEnd(t *testing.T) {
	t.Parallel()
	dbPath := filepath.Join(t.TempDir(), "d.db")
	c := testConfig(t, "-store", "sqlite:"+dbPath, "-admin-token", "secret")
	s, err := build(context.Background(), c, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	srv := httptest.NewServer(s.handler)
	defer srv.Close()
	get := func(path string, h http.Header) (*http.Response, []byte) {
		req, err := http.NewRequest("GET", srv.URL+path, nil)
		require.NoError(t, err)
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, b
	}
	resp, body := get("/t/demo/rows?limit=2", nil)
	require.Equal(t, 200, resp.StatusCode, string(body))
	require.Contains(t, string(body), `"rows"`)
	require.NotEmpty(t, resp.Header.Get("X-RateLimit-Limit"))

	resp, body = get("/t/demo-paid/premium/rows?limit=1", nil)
	require.Equal(t, 402, resp.StatusCode)
	pr, err := x402.DecodePaymentRequired(resp.Header.Get("PAYMENT-REQUIRED"))
	require.NoError(t, err)
	signer, err := localfacilitator.GenerateSigner()
	require.NoError(t, err)
	sp, err := signer.Sign(x402.RequirementFromV2(pr.Accepts[0], pr.Resource), 2, localfacilitator.SignOptions{})
	require.NoError(t, err)
	h := http.Header{}
	h.Set(sp.Header, sp.Value)
	resp, body = get("/t/demo-paid/premium/rows?limit=1", h)
	require.Equal(t, 200, resp.StatusCode, string(body))
	sr, err := x402.DecodeSettleResponse(resp.Header.Get("PAYMENT-RESPONSE"))
	require.NoError(t, err)
	require.True(t, sr.Success)
	resp, _ = get("/t/demo-paid/premium/rows?limit=1", h)
	require.Equal(t, "true", resp.Header.Get("X-Payment-Deduped"))

	// The local facilitator is served over HTTP too, to the admin only.
	resp, body = get("/__facilitator/supported", nil)
	require.Equal(t, 401, resp.StatusCode, string(body))
	require.Contains(t, string(body), "unauthorized")
	resp, body = get("/__facilitator/supported", http.Header{"Authorization": {"Bearer secret"}})
	require.Equal(t, 200, resp.StatusCode, string(body))

	resp, body = get("/__platform/health", nil)
	require.Equal(t, 200, resp.StatusCode)
	require.JSONEq(t, `{"ok":true}`, string(body))
	resp, _ = get("/__platform/events", nil)
	require.Equal(t, 401, resp.StatusCode)
	require.Eventually(t, func() bool {
		h := http.Header{}
		h.Set("Authorization", "Bearer secret")
		resp, body := get("/__platform/events?limit=10", h)
		var ev struct {
			Events []map[string]any `json:"events"`
		}
		return resp.StatusCode == 200 && json.Unmarshal(body, &ev) == nil && len(ev.Events) == 4
	}, 5*time.Second, 50*time.Millisecond)
	resp, body = get("/__platform/analytics?window=today", nil)
	require.Equal(t, 200, resp.StatusCode)
	require.Contains(t, string(body), `"revenueUsd":"0.01"`)
	resp, _ = get("/__platform/analytics?window=decade", nil)
	require.Equal(t, 400, resp.StatusCode)
	s.Close(context.Background())

	// A restart on the same file keeps the ledger: the chain verifies and
	// the payment is still refused as a second settlement.
	var out bytes.Buffer
	require.Equal(t, 0, verifyCommand([]string{"-store", "sqlite:" + dbPath}, &out, io.Discard), out.String())
	require.Contains(t, out.String(), "audit chain OK")
}

func TestGracefulShutdownFinishesInFlightRequests(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(700 * time.Millisecond)
		fmt.Fprint(w, "slow answer")
	}))
	defer slow.Close()
	dir := t.TempDir()
	workers := filepath.Join(dir, "workers.json")
	require.NoError(t, os.WriteFile(workers, []byte(fmt.Sprintf(`{"slow-w":%q}`, slow.URL)), 0o644))
	tenants := filepath.Join(dir, "tenants.json")
	require.NoError(t, os.WriteFile(tenants, []byte(`{"tenants":[{"slug":"slow","workerName":"slow-w","plan":"pro"}]}`), 0o644))
	c := testConfig(t, "-store", "memory", "-addr", addr, "-tenants", tenants, "-workers", workers)
	ctx, cancel := context.WithCancel(context.Background())
	var banner bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, c, &banner, slog.New(slog.DiscardHandler)) }()
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/__platform/health")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	}, 5*time.Second, 20*time.Millisecond)
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/t/slow/x")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	require.Equal(t, "slow answer", <-got, "the in-flight request finished")
	require.NoError(t, <-done)
	require.True(t, strings.Contains(banner.String(), "curl"), "the banner prints curl lines")
}
