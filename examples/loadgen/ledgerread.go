package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "modernc.org/sqlite" // the pure-Go SQLite driver, registered as "sqlite"

	"github.com/402claw/dispatcher/adapters/postgres"
	"github.com/402claw/dispatcher/adapters/sqlite"
	"github.com/402claw/dispatcher/ledger"
)

// errNoLedger means the store holds no ledger the harness can read.
var errNoLedger = errors.New("no readable ledger")

// openLedgerStore opens the ledger of a -store URL through its adapter, for
// reading after the run: sqlite:PATH, or postgres://... once the PostgreSQL
// adapter implements ledger.Store (found by type assertion, so the harness
// picks it up without a change). A memory store dies with the gateway.
func openLedgerStore(ctx context.Context, store string) (ledger.Store, func(), error) {
	switch {
	case strings.HasPrefix(store, "sqlite:"):
		path := strings.TrimPrefix(strings.TrimPrefix(store, "sqlite:"), "//")
		// The DSN the adapter's documentation recommends, minus the
		// write tuning: this handle only reads.
		db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)")
		if err != nil {
			return nil, nil, err
		}
		s, err := sqlite.New(db)
		if err != nil {
			db.Close()
			return nil, nil, fmt.Errorf("opening %s: %w", path, err)
		}
		return s, func() { db.Close() }, nil
	case isPostgres(store):
		pool, err := pgxpool.New(ctx, store)
		if err != nil {
			return nil, nil, fmt.Errorf("postgres: %w", err)
		}
		s, err := postgres.New(ctx, pool, postgres.Config{})
		if err != nil {
			pool.Close()
			return nil, nil, fmt.Errorf("postgres: %w", err)
		}
		ls, ok := any(s).(ledger.Store)
		if !ok {
			pool.Close()
			return nil, nil, fmt.Errorf("%w: the PostgreSQL adapter has no ledger.Store yet", errNoLedger)
		}
		return ls, pool.Close, nil
	}
	return nil, nil, fmt.Errorf("%w: store %q", errNoLedger, store)
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
