package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/ledger"
)

func Example() {
	ctx := context.Background()
	// A fixed clock and id make the output, hashes included, reproducible.
	l, err := ledger.New(memory.NewLedger(), ledger.Config{
		Now:   func() time.Time { return time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC) },
		NewID: func() uuid.UUID { return uuid.MustParse("00000000-0000-4000-8000-000000000001") },
	})
	if err != nil {
		panic(err)
	}

	entry, rec, err := l.RecordSettlement(ctx, ledger.Entry{
		IdempotencyKey: "pay-123",
		Tenant:         "acme",
		Payer:          "0x857b06519E91e3A54538791bDbb0E22373e36b66",
		Amount:         "0.010",
		AmountAtomic:   "10000",
		Network:        "eip155:84532",
		Status:         ledger.StatusSettled,
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("entry:", entry.ID, entry.Amount, "USD at", entry.Time.Format(time.RFC3339))
	fmt.Println("audit:", rec.Seq, rec.Kind, rec.Subject, "prev", rec.PrevHash[:8], "hash", rec.Hash[:8])

	// The same idempotency key again: nothing written, the first entry back.
	again, _, err := l.RecordSettlement(ctx, ledger.Entry{
		IdempotencyKey: "pay-123", Tenant: "acme", Amount: "5", AmountAtomic: "5000000", Status: ledger.StatusSettled,
	})
	fmt.Println("duplicate:", errors.Is(err, ledger.ErrDuplicate), again.Amount)

	swap, err := l.Audit(ctx, ledger.KindDirectorySwap, "", "v2", map[string]any{"tenants": 3})
	if err != nil {
		panic(err)
	}
	fmt.Println("audit:", swap.Seq, swap.Kind, string(swap.Data), "links to", swap.PrevHash[:8])

	n, err := l.Verify(ctx)
	fmt.Println("verified:", n, err)
	// Output:
	// entry: 00000000-0000-4000-8000-000000000001 0.01 USD at 2025-06-01T12:00:00Z
	// audit: 1 settlement pay-123 prev 00000000 hash 26de61ab
	// duplicate: true 0.01
	// audit: 2 directory_swap {"tenants":3} links to 26de61ab
	// verified: 2 <nil>
}
