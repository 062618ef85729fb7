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
	db := openAtVersion(t, 4)
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
	_, err := db.Exec(`INSERT INTO ledger (id, tenant, idempotency_key, owner, payer, amount, amount_atomic, asset,
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

// TestLedgerKeyIndexMerge opens a database that stopped at migration 7,
// with entries of two tenants under the same idempotency keys, with this
// code: migration 8 rebuilds the ledger table with one unique index on
// (idempotency_key, tenant), and every row keeps its rowid and columns,
// the chain verifies, lookups by tenant and key and by key alone answer
// as before, a second entry under a tenant's key is still refused, and
// the table is still append-only.
func TestLedgerKeyIndexMerge(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openAtVersion(t, 7)
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tail, prev := int64(0), ledger.GenesisHash
	for i := range 6 {
		e := ledgertest.Entry([]string{"acme", "beta"}[i%2], fmt.Sprintf("k%d", i/2), base.Add(time.Duration(i)*time.Second))
		if i == 5 {
			e.Status, e.Channel, e.Cumulative = ledger.StatusCharged, "0x"+fmt.Sprintf("%064x", 9), "300"
		}
		_, err := db.Exec(`INSERT INTO ledger (rowid, id, tenant, idempotency_key, owner, payer, amount, amount_atomic, asset,
			network, pay_to, tx_hash, status, request_id, resource, time_us, channel, cumulative) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			10+i, e.ID.String(), e.Tenant, e.IdempotencyKey, e.Owner, e.Payer, e.Amount, e.AmountAtomic, e.Asset,
			e.Network, e.PayTo, e.TxHash, string(e.Status), e.RequestID, e.Resource, e.Time.UnixMicro(), e.Channel, e.Cumulative)
		require.NoError(t, err)
		r := ledger.Seal(ledgertest.Record(t, e), tail, prev)
		_, err = db.Exec(`INSERT INTO audit_log (seq, time_us, kind, tenant, subject, data, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)`,
			r.Seq, r.Time.UnixMicro(), r.Kind, r.Tenant, r.Subject, string(r.Data), r.PrevHash, r.Hash)
		require.NoError(t, err)
		tail, prev = r.Seq, r.Hash
	}

	s, err := New(db)
	require.NoError(t, err)
	v, err := s.SchemaVersion(ctx)
	require.NoError(t, err)
	require.Equal(t, LatestSchemaVersion(), v)

	var rowids []int64
	rows, err := db.Query(`SELECT rowid FROM ledger ORDER BY rowid`)
	require.NoError(t, err)
	for rows.Next() {
		var id int64
		require.NoError(t, rows.Scan(&id))
		rowids = append(rowids, id)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []int64{10, 11, 12, 13, 14, 15}, rowids)
	var keyIndexes int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'ledger'
		AND (name = 'ledger_idempotency_key' OR sql IS NULL AND name LIKE 'sqlite_autoindex_ledger_%')`).Scan(&keyIndexes))
	require.Equal(t, 2, keyIndexes, "the id's and the (idempotency_key, tenant) unique indexes, no other")

	l, err := ledger.New(s, ledger.Config{})
	require.NoError(t, err)
	n, err := l.Verify(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(6), n)
	got, err := s.GetEntry(ctx, "beta", "k2")
	require.NoError(t, err)
	require.Equal(t, ledger.StatusCharged, got.Status)
	require.Equal(t, "300", got.Cumulative)
	byKey, err := s.EntriesByKey(ctx, "k1")
	require.NoError(t, err)
	require.Len(t, byKey, 2)
	require.Equal(t, []string{"acme", "beta"}, []string{byKey[0].Tenant, byKey[1].Tenant})

	_, _, err = l.RecordSettlement(ctx, ledgertest.Entry("acme", "k0", base.Add(time.Hour)))
	require.ErrorIs(t, err, ledger.ErrDuplicate)
	_, _, err = l.RecordSettlement(ctx, ledgertest.Entry("gamma", "k0", base.Add(time.Hour)))
	require.NoError(t, err, "the same key under another tenant")
	n, err = l.Verify(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(7), n)
	for _, stmt := range []string{`UPDATE ledger SET amount = '0'`, `DELETE FROM ledger`, `REPLACE INTO ledger SELECT * FROM ledger`} {
		_, err := db.Exec(stmt)
		require.ErrorContains(t, err, "append-only", stmt)
	}
}

// openAtVersion opens a new database file migrated to version only, as a
// release that stopped there left it: the schema, and schema_migrations
// naming the migrations applied. The Store's own migrations run when New
// opens it.
func openAtVersion(t *testing.T, version int) *sql.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), fmt.Sprintf("v%d.db", version))
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	ms, err := migrations()
	require.NoError(t, err)
	_, err = db.Exec(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_us INTEGER NOT NULL) STRICT`)
	require.NoError(t, err)
	for _, m := range ms[:version] {
		_, err := db.Exec(m.sql)
		require.NoError(t, err, m.name)
		_, err = db.Exec(`INSERT INTO schema_migrations VALUES (?, ?, 0)`, m.version, m.name)
		require.NoError(t, err)
	}
	return db
}
