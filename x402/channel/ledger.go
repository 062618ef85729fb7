package channel

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/x402"
)

// LedgerJournalConfig configures LedgerJournal.
type LedgerJournalConfig struct {
	// Owner returns the owner (user id) of a tenant, for the entries'
	// Owner field; nil leaves it empty.
	Owner func(tenant string) string
	// Decimals converts atomic amounts to the entries' USD Amount; zero
	// means 6 (USDC).
	Decimals int32
}

// LedgerJournal returns a Journal over a ledger: every charge, claim and
// settle sweep is a ledger entry in the hash chain (statuses
// ledger.StatusCharged, StatusClaimed and StatusSwept, with the channel id
// and cumulative amount), keyed by the Entry's Key, so recording an entry
// again after a crash is a no-op. Deposits and refunds, which move the
// payer's own money in and out of escrow rather than paying the tenant,
// are audit records (kinds "channel_deposited" and "channel_refunded").
func LedgerJournal(l *ledger.Ledger, cfg LedgerJournalConfig) Journal {
	if cfg.Decimals == 0 {
		cfg.Decimals = 6
	}
	return JournalFunc(func(ctx context.Context, e Entry) error {
		var status ledger.Status
		switch e.Status {
		case StatusCharged:
			status = ledger.StatusCharged
		case StatusClaimed:
			status = ledger.StatusClaimed
		case StatusSettled:
			status = ledger.StatusSwept
		default:
			_, err := l.Audit(ctx, "channel_"+e.Status, e.Tenant, e.Key, e)
			return err
		}
		return recordEntry(ctx, l, cfg, status, e)
	})
}

func recordEntry(ctx context.Context, l *ledger.Ledger, cfg LedgerJournalConfig, status ledger.Status, e Entry) error {
	atomic := strconv.FormatUint(e.Amount, 10)
	usd, err := x402.FromAtomicUnits(atomic, cfg.Decimals)
	if err != nil {
		return err
	}
	le := ledger.Entry{
		IdempotencyKey: e.Key, Tenant: e.Tenant, Payer: e.Payer,
		Amount: usd.String(), AmountAtomic: atomic, Asset: e.Token, Network: e.Network, PayTo: e.Receiver,
		TxHash: e.Transaction, Status: status, RequestID: e.RequestID, Resource: e.Resource, Time: e.Time,
	}
	if status != ledger.StatusSwept {
		le.Channel, le.Cumulative = strings.ToLower(e.ChannelID), strconv.FormatUint(e.Cumulative, 10)
	}
	if cfg.Owner != nil {
		le.Owner = cfg.Owner(e.Tenant)
	}
	if le.Tenant == "" {
		return fmt.Errorf("channel: ledger journal: %s entry %s has no tenant", e.Status, e.Key)
	}
	got, _, err := l.RecordSettlement(ctx, le)
	if errors.Is(err, ledger.ErrDuplicate) {
		// Recorded before: the same movement, unless the key was reused
		// for another amount, which would be a bug worth stopping on.
		if got.AmountAtomic != atomic || got.Cumulative != le.Cumulative || got.Status != status {
			return fmt.Errorf("channel: ledger journal: %s is recorded as %s %s (cumulative %s), not %s %s (cumulative %s)",
				e.Key, got.Status, got.AmountAtomic, got.Cumulative, status, atomic, le.Cumulative)
		}
		return nil
	}
	return err
}
