package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/ledger/ledgertest"
)

// TestLedgerRebuildKeepsTheChain opens a database that stopped at
// migration 4, with settlements in it, with this code: migration 5
// rebuilds the ledger table for channel entries, and every old row keeps
// its bytes and order, the chain verifies, new channel entries append,
// and the table is still append-only.
func TestLedgerRebuildKeepsTheChain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v4.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })

	// The schema as released before channel entries: migrations 1..4.
	ms, err := migrations()
	require.NoError(t, err)
	_, err = db.Exec(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_us INTEGER NOT NULL) STRICT`)
	require.NoError(t, err)
	for _, m := range ms[:4] {
		_, err := db.Exec(m.sql)
		require.NoError(t, err, m.name)
		_, err = db.Exec(`INSERT INTO schema_migrations VALUES (?, ?, 0)`, m.version, m.name)
		require.NoError(t, err)
	}
	// Old rows written the old way: the ledger through the store's own
	// statements would name the new columns, so insert as v4 code did.
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var old []ledger.Entry
	tail, prev := int64(0), ledger.GenesisHash
	for i := range 5 {
		// Later rows get earlier times: the rowid, not the time, must
		// survive as the tie-breaker and the chain order.
		e := ledgertest.Entry("acme", fmt.Sprintf("k%d", i), base.Add(-time.Duration(i/2)*time.Second))
		_, err := db.Exec(`INSERT INTO ledger (id, tenant, idempotency_key, owner, payer, amount, amount_atomic, asset,
			network, pay_to, tx_hash, status, request_id, resource, time_us) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			e.ID.String(), e.Tenant, e.IdempotencyKey, e.Owner, e.Payer, e.Amount, e.AmountAtomic, e.Asset,
			e.Network, e.PayTo, e.TxHash, string(e.Status), e.RequestID, e.Resource, e.Time.UnixMicro())
		require.NoError(t, err)
		r := ledger.Seal(ledgertest.Record(t, e), tail, prev)
		_, err = db.Exec(`INSERT INTO audit_log (seq, time_us, kind, tenant, subject, data, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)`,
			r.Seq, r.Time.UnixMicro(), r.Kind, r.Tenant, r.Subject, string(r.Data), r.PrevHash, r.Hash)
		require.NoError(t, err)
		tail, prev = r.Seq, r.Hash
		old = append(old, e)
	}
	_, err = db.Exec(`INSERT INTO ledger (id, tenant, idempotency_key, owner, payer, amount, amount_atomic, asset,
		network, pay_to, tx_hash, status, request_id, resource, time_us) VALUES ('x','t','k','','','1','1','','','','','charged','','',0)`)
	require.ErrorContains(t, err, "CHECK", "v4 refuses channel statuses")

	s, err := New(db)
	require.NoError(t, err)
	v, err := s.SchemaVersion(ctx)
	require.NoError(t, err)
	require.Equal(t, LatestSchemaVersion(), v)

	l, err := ledger.New(s, ledger.Config{})
	require.NoError(t, err)
	n, err := l.Verify(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(5), n)
	es, err := s.ListEntries(ctx, ledger.ListEntriesParams{})
	require.NoError(t, err)
	require.Len(t, es, 5)
	require.Equal(t, []string{"k4", "k2", "k3", "k0", "k1"}, keysOf(es), "time order, ties in insertion order")
	for _, e := range es {
		require.Empty(t, e.Channel)
	}

	id := "0x" + fmt.Sprintf("%064x", 7)
	_, _, err = l.RecordSettlement(ctx, ledger.Entry{Tenant: "acme", IdempotencyKey: id + ":charge:100", Amount: "0.0001",
		AmountAtomic: "100", Status: ledger.StatusCharged, Channel: id, Cumulative: "100"})
	require.NoError(t, err)
	n, err = l.Verify(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(6), n)
	for _, stmt := range []string{`UPDATE ledger SET amount = '0'`, `DELETE FROM ledger`, `REPLACE INTO ledger SELECT * FROM ledger`} {
		_, err := db.Exec(stmt)
		require.ErrorContains(t, err, "append-only", stmt)
	}
}

func keysOf(es []ledger.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.IdempotencyKey)
	}
	return out
}
