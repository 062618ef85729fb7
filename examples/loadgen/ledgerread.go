package main

import (
	"context"
	"errors"
	"fmt"

	_ "modernc.org/sqlite" // the pure-Go SQLite driver, registered as "sqlite"

	"github.com/402claw/dispatcher/ledger"
)

// errNoLedger means the store holds no ledger the harness can read.
var errNoLedger = errors.New("no readable ledger")

// openLedgerStore opens the ledger of a -store URL through its adapter, for
// reading after the run: sqlite:PATH or postgres://... (a memory store
// dies with the gateway).
func openLedgerStore(ctx context.Context, store string) (ledger.Store, func(), error) {
	st, closeFn, err := openStore(ctx, store)
	if err != nil {
		return nil, nil, err
	}
	ls, ok := st.(ledger.Store)
	if !ok {
		closeFn()
		return nil, nil, fmt.Errorf("%w: store %q", errNoLedger, store)
	}
	return ls, closeFn, nil
}

// readLedger lists every entry of the store and verifies its audit chain
// in process with ledger.Verify.
func readLedger(ctx context.Context, store string) ([]ledger.Entry, chainResult, error) {
	st, closeFn, err := openLedgerStore(ctx, store)
	if err != nil {
		return nil, chainResult{}, err
	}
	defer closeFn()
	entries, err := st.ListEntries(ctx, ledger.ListEntriesParams{})
	if err != nil {
		return nil, chainResult{}, fmt.Errorf("listing ledger entries: %w", err)
	}
	led, err := ledger.New(st, ledger.Config{})
	if err != nil {
		return nil, chainResult{}, err
	}
	n, verr := led.Verify(ctx)
	return entries, chainResult{Ran: true, Records: n, Err: verr, How: "ledger.Verify"}, nil
}

func statusCounts(es []ledger.Entry) string {
	n := map[ledger.Status]int{}
	for _, e := range es {
		n[e.Status]++
	}
	return fmt.Sprintf("%d settled, %d pending, %d failed", n[ledger.StatusSettled], n[ledger.StatusPending], n[ledger.StatusFailed])
}
