package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

type gw struct {
	t   *testing.T
	srv *httptest.Server
	s   *server
}

func newGW(t *testing.T, args ...string) *gw {
	t.Helper()
	c := testConfig(t, append([]string{"-store", "memory", "-admin-token", "secret"}, args...)...)
	s, err := build(context.Background(), c, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	srv := httptest.NewServer(s.handler)
	t.Cleanup(func() { srv.Close(); s.Close(context.Background()) })
	return &gw{t: t, srv: srv, s: s}
}

func (g *gw) do(method, path string, h http.Header, body io.Reader) (*http.Response, string) {
	g.t.Helper()
	req, err := http.NewRequest(method, g.srv.URL+path, body)
	require.NoError(g.t, err)
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := g.srv.Client().Do(req)
	require.NoError(g.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// challenge returns the 402 of path and the way to pay it with scheme.
func (g *gw) challenge(path, scheme string) x402.Requirement {
	g.t.Helper()
	resp, body := g.do("GET", path, nil, nil)
	require.Equal(g.t, 402, resp.StatusCode, body)
	pr, err := x402.DecodePaymentRequired(resp.Header.Get("PAYMENT-REQUIRED"))
	require.NoError(g.t, err)
	for _, a := range pr.Accepts {
		if a.Scheme == scheme {
			return x402.RequirementFromV2(a, pr.Resource)
		}
	}
	g.t.Fatalf("%s offers no %s: %+v", path, scheme, pr.Accepts)
	return x402.Requirement{}
}

func paid(sp *localfacilitator.SignedPayment) http.Header {
	h := http.Header{}
	h.Set(sp.Header, sp.Value)
	return h
}

// Routes end to end: a free route on a charging tenant, two routes priced
// differently from each other and from the tenant, and a usage-priced
// route whose worker reports the charge.
func TestRoutesEndToEnd(t *testing.T) {
	t.Parallel()
	g := newGW(t)
	resp, body := g.do("GET", "/t/demo-paid/", nil, nil)
	require.Equal(t, 200, resp.StatusCode, "the index is free: %s", body)

	signer, err := localfacilitator.GenerateSigner()
	require.NoError(t, err)
	for path, amount := range map[string]string{"/t/demo-paid/rows?limit=2": "1000", "/t/demo-paid/rows/1": "3000", "/t/demo-paid/climate?city=Tokyo": "10000"} {
		req := g.challenge(path, "exact")
		require.Equal(t, amount, req.Amount, path)
		sp, err := signer.Sign(req, 2, localfacilitator.SignOptions{})
		require.NoError(t, err)
		resp, body := g.do("GET", path, paid(sp), nil)
		require.Equal(t, 200, resp.StatusCode, "%s: %s", path, body)
	}

	// upto: signed for the route's maximum, charged 3 rows.
	req := g.challenge("/t/demo-paid/metered/rows?limit=3", "upto")
	require.Equal(t, "10000", req.Amount, "the maximum")
	sp, err := signer.SignUpto(req, localfacilitator.SignOptions{})
	require.NoError(t, err)
	resp, body = g.do("GET", "/t/demo-paid/metered/rows?limit=3", paid(sp), nil)
	require.Equal(t, 200, resp.StatusCode, body)
	require.Empty(t, resp.Header.Get("Settlement-Overrides"), "the worker's report never reaches the client")
	sr, err := x402.DecodeSettleResponse(resp.Header.Get("PAYMENT-RESPONSE"))
	require.NoError(t, err)
	require.True(t, sr.Success)
	es, err := g.s.pay.Ledger().Entries(context.Background(), ledger.ListEntriesParams{Tenant: "demo-paid"})
	require.NoError(t, err)
	var charged []string
	for _, e := range es {
		charged = append(charged, e.AmountAtomic)
	}
	require.ElementsMatch(t, []string{"1000", "3000", "10000", "300"}, charged)
}

// An ambiguous directory is refused at start-up, naming both routes.
func TestAmbiguousDirectoryRefusedAtStartup(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "tenants.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"tenants":[{"slug":"a","workerName":"w","x402Enabled":true,"priceUsd":"0.01",
	  "routes":[{"path":"/x/:id","priceUsd":"0.1"},{"path":"/x/:name","priceUsd":"0.2"}]}]}`), 0o644))
	err := run(context.Background(), testConfig(t, "-store", "memory", "-tenants", path, "-addr", "127.0.0.1:0"), io.Discard, slog.New(slog.DiscardHandler))
	require.Error(t, err)
	require.Contains(t, oneLine(err), "routes[0]")
	require.Contains(t, oneLine(err), "routes[1]")
	require.Contains(t, oneLine(err), "ambiguous")
}

// The front: the marketplace page for people, discovery for agents, a
// paywall page for a browser, on the platform's host.
func TestFrontEndToEnd(t *testing.T) {
	t.Parallel()
	g := newGW(t)
	resp, body := g.do("GET", "/", nil, nil)
	require.Equal(t, 200, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "text/html")
	require.Contains(t, body, "demo-paid")
	resp, body = g.do("GET", "/discovery/resources?limit=100", nil, nil)
	require.Equal(t, 200, resp.StatusCode, body)
	var list struct {
		Items []struct {
			Resource string            `json:"resource"`
			Accepts  []json.RawMessage `json:"accepts"`
		} `json:"items"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &list))
	var resources []string
	for _, it := range list.Items {
		resources = append(resources, it.Resource)
	}
	require.Contains(t, strings.Join(resources, " "), "/t/demo-paid/rows")
	resp, _ = g.do("GET", "/discovery/resources?limit=0", nil, nil)
	require.Equal(t, 400, resp.StatusCode)

	resp, body = g.do("GET", "/t/demo-paid/rows", http.Header{"Accept": {"text/html"}}, nil)
	require.Equal(t, 402, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "text/html")
	require.NotEmpty(t, resp.Header.Get("PAYMENT-REQUIRED"))
	require.Contains(t, body, "0.001")
	// The route declares discovery: its Bazaar declaration is in the 402.
	pr, err := x402.DecodePaymentRequired(resp.Header.Get("PAYMENT-REQUIRED"))
	require.NoError(t, err)
	require.Contains(t, string(pr.Extensions["bazaar"]), "country")
}

// Operating: a tenant published at runtime is served at once, metrics
// count it, and the body cap holds.
func TestOperatingEndToEnd(t *testing.T) {
	t.Parallel()
	g := newGW(t, "-max-body-bytes", "1024")
	admin := http.Header{"Authorization": {"Bearer secret"}, "Content-Type": {"application/json"}}
	resp, body := g.do("PUT", "/__platform/tenants/fresh", admin, strings.NewReader(`{"slug":"fresh","workerName":"demo-csv"}`))
	require.Contains(t, []int{200, 201}, resp.StatusCode, body)
	resp, body = g.do("GET", "/t/fresh/rows?limit=1", nil, nil)
	require.Equal(t, 200, resp.StatusCode, body)
	resp, _ = g.do("PUT", "/__platform/tenants/other", nil, strings.NewReader(`{"slug":"other","workerName":"demo-csv"}`))
	require.Equal(t, 401, resp.StatusCode)

	resp, body = g.do("POST", "/t/fresh/rows", nil, bytes.NewReader(make([]byte, 2048)))
	require.Equal(t, 413, resp.StatusCode, body)
	require.Contains(t, body, "request_too_large")

	require.Eventually(t, func() bool {
		_, m := g.do("GET", "/metrics", nil, nil)
		return strings.Contains(m, `dispatcher_requests_total{lifecycle="served",status="200",tenant="fresh"} 1`)
	}, 5*time.Second, 50*time.Millisecond)
}

// Payment channels end to end: a deposit with the first voucher, then a
// voucher, each charged by rows returned, with no facilitator call for the
// voucher; every charge is a ledger entry, and so are the claim and the
// settle sweep the claimer makes of them.
func TestChannelEndToEnd(t *testing.T) {
	t.Parallel()
	g := newGW(t, "-claim-interval", "1ms")
	req := g.challenge("/t/demo-paid/channel/rows?limit=2", channel.Name)
	key, err := secp256k1.GeneratePrivateKey()
	require.NoError(t, err)
	cl := channel.NewClient(key)
	cfg, err := cl.ChannelConfig(req, channel.RandomSalt())
	require.NoError(t, err)
	now := time.Now()
	pl, err := cl.DepositPayload(req, cfg, 1_000_000, 10_000, now.Add(-time.Minute), now.Add(time.Minute))
	require.NoError(t, err)
	send := func(pl *channel.Payload) *x402.SettleResponse {
		p, err := channel.Envelope(req, pl)
		require.NoError(t, err)
		h := http.Header{}
		h.Set("PAYMENT-SIGNATURE", base64.StdEncoding.EncodeToString(p.Raw))
		resp, body := g.do("GET", "/t/demo-paid/channel/rows?limit=2", h, nil)
		require.Equal(t, 200, resp.StatusCode, body)
		sr, err := x402.DecodeSettleResponse(resp.Header.Get("PAYMENT-RESPONSE"))
		require.NoError(t, err)
		return sr
	}
	sr := send(pl)
	require.Equal(t, "200", sr.Extra[channel.ExtraChargedAmount], "two rows at 100 each")
	vp, err := cl.VoucherPayload(req, cfg, 200+10_000)
	require.NoError(t, err)
	sr = send(vp)
	require.Empty(t, sr.Transaction, "a voucher moves nothing on chain")
	ctx := context.Background()
	l := g.s.pay.Ledger()
	time.Sleep(5 * time.Millisecond) // past the claim interval
	rep, err := g.s.claimer.RunOnce(ctx)
	require.NoError(t, err)
	id, err := cfg.ID(84532)
	require.NoError(t, err)
	require.Equal(t, uint64(400), rep.Claimed[id])
	es, err := l.Entries(ctx, ledger.ListEntriesParams{Tenant: "demo-paid"})
	require.NoError(t, err)
	var got []string
	for _, e := range es {
		got = append(got, fmt.Sprintf("%s %s %s %s", e.Status, e.AmountAtomic, e.Cumulative, e.Channel))
		require.NotEmpty(t, e.Owner, "entries carry the tenant's owner")
	}
	require.Equal(t, []string{
		"charged 200 200 " + id, "charged 200 400 " + id, "claimed 400 400 " + id, "swept 400  ",
	}, got, "every charge is a ledger entry; the claim and the sweep too")
	_, err = l.Verify(ctx)
	require.NoError(t, err)
}
