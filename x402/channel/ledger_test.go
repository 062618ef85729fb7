package channel_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/channel/channeltest"
)

func TestLedgerJournal(t *testing.T) {
	ctx := context.Background()
	store := memory.NewLedger()
	l, err := ledger.New(store, ledger.Config{})
	require.NoError(t, err)
	j := channel.LedgerJournal(l, channel.LedgerJournalConfig{Owner: func(tenant string) string { return "owner-" + tenant }})

	id := "0x" + strings.Repeat("0a", 32)
	base := channel.Entry{ChannelID: strings.ToUpper(id[:2]) + id[2:], Network: "eip155:84532", Payer: "0xpayer",
		Receiver: "0xreceiver", Token: "0xtoken", Tenant: "acme", Time: time.Now()}
	at := func(e channel.Entry, key, status string, amount, cum uint64, tx string) channel.Entry {
		e.Key, e.Status, e.Amount, e.Cumulative, e.Transaction = key, status, amount, cum, tx
		return e
	}
	deposit := at(base, "deposit:1", channel.StatusDeposited, 1_000_000, 1_000_000, "0xd")
	c1 := at(base, id+":charge:100", channel.StatusCharged, 100, 100, "")
	c2 := at(base, id+":charge:350", channel.StatusCharged, 250, 350, "")
	claim := at(base, "claim:"+id+":350", channel.StatusClaimed, 350, 350, "0xc")
	sweep := at(base, "settle:0xreceiver:0xtoken:0xs", channel.StatusSettled, 350, 0, "0xs")
	sweep.ChannelID = ""
	for _, e := range []channel.Entry{deposit, c1, c2, c2, claim, sweep, claim} { // repeats are no-ops
		require.NoError(t, j.Record(ctx, e))
	}

	es, err := l.Entries(ctx, ledger.ListEntriesParams{})
	require.NoError(t, err)
	require.Len(t, es, 4, "deposits are audit records, repeats write nothing")
	var charged uint64
	for _, e := range es {
		require.Equal(t, "owner-acme", e.Owner)
		switch e.Status {
		case ledger.StatusCharged:
			require.Equal(t, id, e.Channel, "channel ids are stored lower-case")
			require.Empty(t, e.TxHash)
			charged += map[string]uint64{"100": 100, "250": 250}[e.AmountAtomic]
		case ledger.StatusClaimed:
			require.Equal(t, "350", e.Cumulative)
			require.Equal(t, "0xc", e.TxHash)
		case ledger.StatusSwept:
			require.Empty(t, e.Channel)
			require.Equal(t, "0.00035", e.Amount)
		default:
			t.Fatalf("unexpected entry %+v", e)
		}
	}
	require.Equal(t, uint64(350), charged)
	recs, err := l.AuditLog(ctx, ledger.ListAuditParams{})
	require.NoError(t, err)
	require.Equal(t, "channel_deposited", recs[0].Kind)
	_, err = l.Verify(ctx)
	require.NoError(t, err)

	// A key reused for another amount is an error, not a silent no-op.
	bad := c2
	bad.Amount = 251
	require.ErrorContains(t, j.Record(ctx, bad), "recorded as charged 250")
	// An entry without a tenant cannot be booked.
	orphan := at(base, id+":charge:400", channel.StatusCharged, 50, 400, "")
	orphan.Tenant = ""
	require.ErrorContains(t, j.Record(ctx, orphan), "no tenant")
}

// A channel pays whichever routes name its receiver and token, so tenants
// sharing a payTo share it: each charge is booked as revenue of the tenant
// that served the request (with that tenant's owner), not of the tenant
// the channel was opened for; the charges still sum to the channel's
// chargedCumulativeAmount.
func TestChargesBookedToTheServingTenant(t *testing.T) {
	ctx := context.Background()
	l, err := ledger.New(memory.NewLedger(), ledger.Config{})
	require.NoError(t, err)
	j := channel.LedgerJournal(l, channel.LedgerJournalConfig{Owner: func(t string) string { return "owner-" + t }})
	e := channeltest.NewEnv(t, memory.NewKV(), channel.Config{Journal: j})
	// A channel of its own (the env's was opened without a tenant).
	cc, err := e.Client.ChannelConfig(e.Req, channel.RandomSalt())
	require.NoError(t, err)
	now := time.Now()
	pl, err := e.Client.DepositPayload(e.Req, cc, channeltest.Deposit, 1000, now.Add(-time.Minute), now.Add(time.Hour))
	require.NoError(t, err)
	p, err := channel.Envelope(e.Req, pl)
	require.NoError(t, err)
	h, err := e.Service.BeginMeta(ctx, p, e.Req, channel.Meta{Tenant: "tenant-a", RequestID: "r1"})
	require.NoError(t, err)
	_, err = h.Commit(ctx, "1000")
	require.NoError(t, err)
	vpl, err := e.Client.VoucherPayload(e.Req, cc, 2000)
	require.NoError(t, err)
	vp, err := channel.Envelope(e.Req, vpl)
	require.NoError(t, err)
	h, err = e.Service.BeginMeta(ctx, vp, e.Req, channel.Meta{Tenant: "tenant-b", RequestID: "r2"})
	require.NoError(t, err)
	_, err = h.Commit(ctx, "600")
	require.NoError(t, err)

	es, err := l.Entries(ctx, ledger.ListEntriesParams{})
	require.NoError(t, err)
	byRequest := map[string]string{}
	var sum int
	for _, x := range es {
		if x.Status == ledger.StatusCharged {
			byRequest[x.RequestID] = x.Tenant + "/" + x.Owner + "/" + x.AmountAtomic
			n, _ := strconv.Atoi(x.AmountAtomic)
			sum += n
		}
	}
	require.Equal(t, map[string]string{"r1": "tenant-a/owner-tenant-a/1000", "r2": "tenant-b/owner-tenant-b/600"}, byRequest)
	id, err := cc.ID(84532)
	require.NoError(t, err)
	st, err := e.Service.Load(ctx, id)
	require.NoError(t, err)
	require.EqualValues(t, st.Charged, sum)
}
