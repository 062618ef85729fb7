package metrics_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/tenant"
)

// The usage event carries the route pattern, the client's network prefix
// and the verified payer: what the trending score's diversity counts.
func TestUsageEventOfFillsDiversityFields(t *testing.T) {
	dir, err := tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"a","workerName":"w","x402Enabled":true,"priceUsd":"0.01","routes":[{"path":"/rows/:id","priceUsd":"0.002"}]}]}`))
	require.NoError(t, err)
	tn, _ := dir.Lookup("a")
	x := &dispatch.Exchange{Tenant: tn, Price: tn.PriceFor("GET", "/rows/7"), ClientIP: netip.MustParseAddr("203.0.113.77"),
		CallerID: "c_x", Payer: "0xABC", BilledUSD: "0.002", Lifecycle: dispatch.LifecyclePaymentSettled}
	x.Payload.Path = "/rows/7"
	ev := metrics.UsageEventOf(dispatch.Event{Type: dispatch.EventSuccess, Time: time.Now(), RequestID: "r", Tenant: "a", Status: 200, Exchange: x})
	require.Equal(t, "/rows/:id", ev.Endpoint)
	require.Equal(t, metrics.HashClientNet(netip.MustParseAddr("203.0.113.1")), ev.ClientNet, "one /24, one network")
	require.Equal(t, metrics.HashPayer("0xabc"), ev.Payer)
	require.Equal(t, "0.002", ev.BilledUSD.String())
	require.Equal(t, metrics.LifecyclePaymentSettled, ev.Lifecycle)
	x.Payer, x.ClientIP = "", netip.Addr{}
	ev = metrics.UsageEventOf(dispatch.Event{Type: dispatch.EventSuccess, Time: time.Now(), RequestID: "r", Tenant: "a", Status: 200, Exchange: x})
	require.Empty(t, ev.Payer)
	require.Equal(t, metrics.HashClientNet(netip.Addr{}), ev.ClientNet, "an unknown address is one shared network, not a fresh caller")
}
