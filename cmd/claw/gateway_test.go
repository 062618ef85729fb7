package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/examples/httpserver/demo"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/ops"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/payment"
)

const (
	testAdminToken = "e2e-admin-token"
	testPayTo      = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
)

// testGateway is a whole gateway in process on the memory adapters: the
// dispatcher with rate limits, x402 payment (local facilitator) and quotas,
// the admin API over the metrics platform routes, and the built-in CSV
// worker. It is wired the way examples/httpserver wires its pieces.
type testGateway struct {
	srv      *httptest.Server
	registry *tenant.Registry
	ledger   *ledger.Ledger
	accounts *ops.Accounts
	sink     *metrics.AsyncSink
}

func newTestGateway(t *testing.T) *testGateway {
	t.Helper()
	ctx := context.Background()
	led, err := ledger.New(memory.NewLedger(), ledger.Config{})
	require.NoError(t, err)
	kv := memory.NewKV()
	fac, err := localfacilitator.New(localfacilitator.Config{Store: kv})
	require.NoError(t, err)
	limiter, err := quota.New(kv, quota.Config{})
	require.NoError(t, err)
	pay, err := payment.NewStage(payment.Config{Facilitator: fac, KV: kv, Ledger: led, Meter: limiter, PayTo: testPayTo})
	require.NoError(t, err)
	events, err := memory.NewEvents(memory.EventsConfig{})
	require.NoError(t, err)
	sink, err := metrics.NewAsyncSink(events, metrics.AsyncSinkConfig{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sink.Close(ctx) })

	registry := tenant.NewRegistry(nil)
	platform, err := metrics.NewPlatformHandler(events, metrics.PlatformConfig{
		AdminToken: testAdminToken,
		PublishedAPIs: func() []metrics.APIInfo {
			var out []metrics.APIInfo
			for _, t := range registry.Load().Tenants() {
				out = append(out, metrics.APIInfo{APIID: t.Slug, Owner: t.OwnerUserID, Directory: t.Directory})
			}
			return out
		},
	})
	require.NoError(t, err)
	accounts, err := ops.NewAccounts(memory.NewUsers(), ops.AccountsConfig{})
	require.NoError(t, err)
	datasets := memory.NewDatasets()
	admin, err := ops.NewAdminHandler(ops.AdminConfig{
		AdminToken: testAdminToken, Registry: registry, Store: memory.NewTenants(), Ledger: led,
		Accounts: accounts, Datasets: datasets, Next: platform,
	})
	require.NoError(t, err)
	fetcher := demo.NewDatasetWorker(datasets).Fetcher(dispatch.NewHandlerFetcher(demo.Workers()))
	d, err := dispatch.NewDispatcher(dispatch.Config{
		Tenants:  registry,
		Fetcher:  fetcher,
		Stages:   []dispatch.Stage{limiter.Stage(), pay},
		Events:   metrics.UsageSink(sink),
		Platform: admin,
	})
	require.NoError(t, err)
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	return &testGateway{srv: srv, registry: registry, ledger: led, accounts: accounts, sink: sink}
}

// get fetches a URL of the gateway and returns the status.
func (g *testGateway) status(t *testing.T, path string) int {
	t.Helper()
	resp, err := http.Get(g.srv.URL + path)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}
