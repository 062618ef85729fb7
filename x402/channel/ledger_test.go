package channel_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/x402/channel"
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
