package metrics_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/metrics/metricstest"
)

// call is one synthetic request: from address ip, asserting agent id, paid
// by payer ("" for a free call), at.
type call struct {
	api, agent, payer string
	ip                netip.Addr
	at                time.Time
}

func (c call) event(i int) metrics.UsageEvent {
	lc, price := metrics.LifecycleServed, "0"
	if c.payer != "" {
		lc, price = metrics.LifecyclePaymentSettled, "0.001"
	}
	// The dispatcher hashes the payer into the caller id of a paid call.
	caller := "agent:" + c.agent
	if c.payer != "" {
		caller = "payer:" + c.payer
	}
	e := metricstest.Event(fmt.Sprintf("%s-%d", c.api, i), c.api, caller, c.at, lc, price, 40)
	e.ClientNet = metrics.HashClientNet(c.ip)
	e.Payer = metrics.HashPayer(c.payer)
	return e
}

func leaderboard(t *testing.T, calls []call) []metrics.TopAPI {
	t.Helper()
	s, err := memory.NewEvents(memory.EventsConfig{})
	require.NoError(t, err)
	events := make([]metrics.UsageEvent, len(calls))
	for i, c := range calls {
		events[i] = c.event(i)
	}
	require.NoError(t, s.Append(context.Background(), events...))
	a, err := metrics.BuildMarketplaceAnalytics(context.Background(), s, metrics.AnalyticsOptions{Window: metrics.WindowToday, Now: now, Top: metrics.MaxTop})
	require.NoError(t, err)
	return a.TopAPIs
}

// rotating makes n calls to api from one /24 (varying the host part), each
// under a fresh X-Agent-Id, spread over hours hours.
func rotating(api string, n, hours int) []call {
	out := make([]call, n)
	for i := range out {
		out[i] = call{
			api: api, agent: fmt.Sprint("bot-", i),
			ip: netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i%250)}),
			at: day.Add(8*time.Hour + time.Duration(i%hours)*time.Hour + time.Duration(i)*time.Second),
		}
	}
	return out
}

// organic makes n calls to api from callers distinct agents, each in its
// own /24 (or paying as its own payer), spread over hours hours.
func organic(api string, n, callers, hours int, paid bool) []call {
	out := make([]call, n)
	for i := range out {
		c := i % callers
		out[i] = call{
			api: api, agent: fmt.Sprint("agent-", c),
			ip: netip.AddrFrom4([4]byte{10, byte(c >> 8), byte(c), 7}),
			at: day.Add(6*time.Hour + time.Duration(i%hours)*time.Hour + time.Duration(i)*time.Second),
		}
		if paid {
			out[i].payer = fmt.Sprintf("0x%040x", c+1)
		}
	}
	return out
}

func apiIDs(rows []metrics.TopAPI) []string {
	var out []string
	for _, r := range rows {
		out = append(out, r.APIID)
	}
	return out
}

// TestRotatingAgentIDsDoNotBuyDiversity is the security finding: the score
// rewarded distinct X-Agent-Ids, which a caller mints for free. Diversity
// now comes from networks (free calls) and verified payers (paid calls).
func TestRotatingAgentIDsDoNotBuyDiversity(t *testing.T) {
	t.Parallel()
	for _, hours := range []int{1, 12} {
		t.Run(fmt.Sprintf("90 rotating ids from one /24 over %dh vs 70 calls from 35 networks", hours), func(t *testing.T) {
			t.Parallel()
			calls := append(rotating("spam", 90, hours), organic("organic", 70, 35, 12, false)...)
			rows := leaderboard(t, calls)
			require.Equal(t, []string{"organic", "spam"}, apiIDs(rows))
			spam := rows[1]
			require.Equal(t, 90, spam.UniqueCallers, "the public figure counts the ids callers assert")
			require.Equal(t, 1, spam.UniqueSources, "the score counts one network")
			require.InDelta(t, 1, spam.MaxSourceShare, 1e-9)
			require.Equal(t, 35, rows[0].UniqueSources)
			require.Less(t, spam.Score, rows[0].Score/3)
		})
	}
	t.Run("1,000 rotating ids from one /24 do not beat 20 real payers", func(t *testing.T) {
		t.Parallel()
		calls := append(rotating("spam", 1000, 12), organic("paid", 60, 20, 12, true)...)
		rows := leaderboard(t, calls)
		require.Equal(t, []string{"paid", "spam"}, apiIDs(rows))
		require.Equal(t, 20, rows[0].UniqueSources)
		require.Equal(t, 1000, rows[1].UniqueCallers)
		require.Equal(t, 1, rows[1].UniqueSources)
	})
	t.Run("one payer paying from many networks is one source", func(t *testing.T) {
		t.Parallel()
		var calls []call
		for i := range 80 {
			calls = append(calls, call{api: "whale", agent: fmt.Sprint("w", i), payer: "0xWHALE",
				ip: netip.AddrFrom4([4]byte{byte(20 + i), 1, 1, 1}), at: day.Add(time.Duration(6+i%12) * time.Hour)})
		}
		calls = append(calls, organic("paid", 60, 20, 12, true)...)
		rows := leaderboard(t, calls)
		require.Equal(t, []string{"paid", "whale"}, apiIDs(rows))
		require.Equal(t, 1, rows[1].UniqueSources)
		require.Equal(t, 1, rows[1].UniqueCallers, "a paid call's caller id is its payer")
	})
}
