package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/402claw/dispatcher/ledger"
)

var _ ledger.Store = (*Store)(nil)

const entryColumns = `id, tenant, idempotency_key, owner, payer, amount, amount_atomic, asset,
	network, pay_to, tx_hash, status, request_id, resource, time_us, channel, cumulative`

// getEntrySQL is GetEntry's query, prepared once: a paid request reads
// its entry back on the hot path.
const getEntrySQL = `SELECT ` + entryColumns + ` FROM ledger WHERE tenant = ? AND idempotency_key = ?`

// hasEntrySQL answers from the (tenant, idempotency_key) index alone.
const hasEntrySQL = `SELECT 1 FROM ledger WHERE tenant = ? AND idempotency_key = ?`

const auditColumns = `seq, time_us, kind, tenant, subject, data, prev_hash, hash`

const (
	tailSQL = `SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1`
	// existsSQL tells a duplicate apart once an insert was refused.
	existsSQL = `SELECT 1 FROM ledger WHERE tenant = ? AND idempotency_key = ?`
	// entryArgs and auditArgs are the columns, so the parameters, of one
	// row of each table.
	entryArgs = 17
	auditArgs = 8
)

// maxRows is the most rows one multi-row INSERT carries; a batch is cut
// into statements of 128, 64, ..., 1 rows (its size in binary), so each
// connection prepares at most eight statements per table.
const maxRows = 128

// insertSQL[i] inserts 1<<i rows of each table.
var insertEntriesSQL, insertAuditSQL = multiRowInserts()

func multiRowInserts() (entries, audit [8]string) {
	row := func(n int) string { return "(" + strings.Repeat("?, ", n-1) + "?)" }
	for i := range entries {
		rows := 1 << i
		entries[i] = `INSERT INTO ledger (` + entryColumns + `) VALUES ` + strings.Repeat(row(entryArgs)+", ", rows-1) + row(entryArgs)
		audit[i] = `INSERT INTO audit_log (` + auditColumns + `) VALUES ` + strings.Repeat(row(auditArgs)+", ", rows-1) + row(auditArgs)
	}
	return entries, audit
}

// ledgerOp is one append to the audit chain waiting for its group: a
// settlement (entry set) or an audit record alone. The committer fills
// sealed, or dup for a settlement whose key the tenant already has.
type ledgerOp struct {
	entry  *ledger.Entry
	rec    ledger.AuditRecord
	sealed ledger.AuditRecord
	dup    bool
}

// entryKey is what a ledger entry is unique by.
type entryKey struct{ tenant, key string }

// AppendSettlement implements ledger.Store. The duplicate check, the
// read of the chain's tail and both inserts happen in one immediate
// transaction, shared with the other writes queued at the same moment
// (group commit, see the package documentation): the group's entries go
// in with a few multi-row INSERTs, then its audit records, each sealed
// against the one before it in queue order, and each caller is answered
// after the COMMIT.
func (s *Store) AppendSettlement(ctx context.Context, e ledger.Entry, rec ledger.AuditRecord) (ledger.AuditRecord, error) {
	op := &ledgerOp{entry: &e, rec: rec}
	err := s.enqueue(&groupOp{ctx: ctx, led: op, fn: op.alone})
	if err == nil && op.dup {
		return ledger.AuditRecord{}, ledger.ErrDuplicate
	}
	if err != nil {
		return ledger.AuditRecord{}, fmt.Errorf("sqlite: append settlement: %w", err)
	}
	return op.sealed, nil
}

// AppendAudit implements ledger.Store, group-committed like
// AppendSettlement.
func (s *Store) AppendAudit(ctx context.Context, rec ledger.AuditRecord) (ledger.AuditRecord, error) {
	op := &ledgerOp{rec: rec}
	if err := s.enqueue(&groupOp{ctx: ctx, led: op, fn: op.alone}); err != nil {
		return ledger.AuditRecord{}, fmt.Errorf("sqlite: append audit: %w", err)
	}
	return op.sealed, nil
}

// alone appends op in a transaction of its own.
func (op *ledgerOp) alone(g *groupTx) error { return g.appendLedger([]*ledgerOp{op}) }

// appendLedger appends ops, in order, inside the group's transaction:
// first the entries of the settlements, then one sealed audit record per
// op that is not a duplicate. Of two settlements with one key in ops, the
// first is kept and the second is a duplicate.
func (g *groupTx) appendLedger(ops []*ledgerOp) error {
	clear(g.seen)
	if g.seen == nil {
		g.seen = make(map[entryKey]struct{}, len(ops))
	}
	// The entries to insert go to the front of a scratch slice, kept
	// apart from ops, whose order is the chain's.
	entries := make([]*ledgerOp, 0, len(ops))
	for _, op := range ops {
		op.dup, op.sealed = false, ledger.AuditRecord{}
		if op.entry == nil {
			continue
		}
		k := entryKey{op.entry.Tenant, op.entry.IdempotencyKey}
		if _, ok := g.seen[k]; ok {
			op.dup = true
			continue
		}
		g.seen[k] = struct{}{}
		entries = append(entries, op)
	}
	for len(entries) > 0 {
		n := chunk(len(entries))
		if err := g.insertEntries(entries[:n]); err != nil {
			return err
		}
		entries = entries[n:]
	}
	return g.insertAudit(ops)
}

// chunk is the rows of the next statement for n rows to go: the highest
// power of two in n, at most maxRows.
func chunk(n int) int {
	c := maxRows
	for c > n {
		c >>= 1
	}
	return c
}

// insertEntries inserts the entries of ops (len(ops) a power of two up to
// maxRows) in one statement. Rows of this tenant and key already stored
// make the append-only trigger refuse the whole statement, which SQLite
// undoes alone (the transaction goes on): those entries are then looked
// up, marked duplicates, and the others inserted again. Duplicates are
// rare (a retried settlement whose idempotency record was lost), so the
// common case pays no lookup of its own.
func (g *groupTx) insertEntries(ops []*ledgerOp) error {
	err := g.execEntries(ops)
	if err == nil || !isDuplicateRefusal(err) {
		return err
	}
	exists, serr := g.stmt(existsSQL)
	if serr != nil {
		return serr
	}
	rest := make([]*ledgerOp, 0, len(ops))
	for _, op := range ops {
		var one int
		switch err := exists.QueryRowContext(g.ctx, op.entry.Tenant, op.entry.IdempotencyKey).Scan(&one); {
		case err == nil:
			op.dup = true
		case errors.Is(err, sql.ErrNoRows):
			rest = append(rest, op)
		default:
			return err
		}
	}
	if len(rest) == len(ops) {
		return err // refused for another reason (an id already stored)
	}
	for len(rest) > 0 {
		n := chunk(len(rest))
		if err := g.execEntries(rest[:n]); err != nil {
			return err
		}
		rest = rest[n:]
	}
	return nil
}

// execEntries runs the multi-row INSERT of len(ops) entries, a power of
// two up to maxRows.
func (g *groupTx) execEntries(ops []*ledgerOp) error {
	st, err := g.stmt(insertEntriesSQL[bits.TrailingZeros(uint(len(ops)))])
	if err != nil {
		return err
	}
	args := g.args[:0]
	for _, op := range ops {
		e := op.entry
		args = append(args, e.ID.String(), e.Tenant, e.IdempotencyKey, e.Owner, e.Payer, e.Amount,
			e.AmountAtomic, e.Asset, e.Network, e.PayTo, e.TxHash, string(e.Status), e.RequestID, e.Resource,
			e.Time.UnixMicro(), e.Channel, e.Cumulative)
	}
	_, err = st.ExecContext(g.ctx, args...)
	clear(args)
	g.args = args[:0]
	return err
}

// isDuplicateRefusal reports whether err is the ledger's append-only
// trigger refusing a row whose id, or tenant and key, is already stored.
func isDuplicateRefusal(err error) bool {
	return strings.Contains(err.Error(), "duplicate row refused")
}

// insertAudit seals the record of every op that is not a duplicate
// against the chain's tail, in order, and inserts them. The tail is read
// once per transaction and then carried from record to record; a failed
// insert leaves it unchanged (and the whole group is then rolled back
// anyway).
func (g *groupTx) insertAudit(ops []*ledgerOp) error {
	if !g.tailRead {
		st, err := g.stmt(tailSQL)
		if err != nil {
			return err
		}
		g.tailSeq, g.tailHash = 0, ledger.GenesisHash
		err = st.QueryRowContext(g.ctx).Scan(&g.tailSeq, &g.tailHash)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read chain tail: %w", err)
		}
		g.tailRead = true
	}
	live := make([]*ledgerOp, 0, len(ops))
	seq, hash := g.tailSeq, g.tailHash
	for _, op := range ops {
		if op.dup {
			continue
		}
		op.sealed = ledger.Seal(op.rec, seq, hash)
		op.sealed.Data = append([]byte(nil), op.rec.Data...)
		seq, hash = op.sealed.Seq, op.sealed.Hash
		live = append(live, op)
	}
	for len(live) > 0 {
		n := chunk(len(live))
		if err := g.execAudit(live[:n]); err != nil {
			return err
		}
		live = live[n:]
	}
	g.tailSeq, g.tailHash = seq, hash
	return nil
}

// execAudit runs the multi-row INSERT of the sealed records of ops,
// len(ops) a power of two up to maxRows.
func (g *groupTx) execAudit(ops []*ledgerOp) error {
	st, err := g.stmt(insertAuditSQL[bits.TrailingZeros(uint(len(ops)))])
	if err != nil {
		return err
	}
	args := g.args[:0]
	for _, op := range ops {
		r := &op.sealed
		args = append(args, r.Seq, r.Time.UnixMicro(), r.Kind, r.Tenant, r.Subject, string(r.Data), r.PrevHash, r.Hash)
	}
	_, err = st.ExecContext(g.ctx, args...)
	clear(args)
	g.args = args[:0]
	if err != nil {
		return fmt.Errorf("insert audit records %d to %d: %w", ops[0].sealed.Seq, ops[len(ops)-1].sealed.Seq, err)
	}
	return nil
}

// GetEntry implements ledger.Store.
//
// Most lookups are of keys not settled yet (every paid request checks its
// key before it is verified). Those are answered from the index on the
// group committer's connection, between its groups (outside their
// transactions: no write lock), not on a pooled one: every commit empties
// the page cache of every other connection at its next transaction, so
// under load a pooled connection read the index's pages again from the
// file for each lookup (about 60 us of CPU per lookup, 5% of a paid
// request's). The committer's connection made those commits, and its
// cache stays warm. A key that is found (rare: a retry after its
// idempotency record expired) is then read whole on a pooled connection.
func (s *Store) GetEntry(ctx context.Context, tenant, idempotencyKey string) (ledger.Entry, error) {
	var found bool
	err := s.groupRead(ctx, func(g *groupTx) error {
		st, err := g.stmt(hasEntrySQL)
		if err != nil {
			return err
		}
		var one int
		err = st.QueryRowContext(g.ctx, tenant, idempotencyKey).Scan(&one)
		found = err == nil
		if errors.Is(err, sql.ErrNoRows) {
			err = nil
		}
		return err
	})
	if err == nil && !found {
		return ledger.Entry{}, ledger.ErrNotFound
	}
	var e ledger.Entry
	if err == nil {
		err = s.read(ctx, func() error {
			var err error
			e, err = scanEntry(s.entryStmt.QueryRowContext(ctx, tenant, idempotencyKey))
			return err
		})
	}
	if errors.Is(err, sql.ErrNoRows) {
		return ledger.Entry{}, ledger.ErrNotFound
	}
	if err != nil {
		return ledger.Entry{}, fmt.Errorf("sqlite: get entry: %w", err)
	}
	return e, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanEntry(r scanner) (ledger.Entry, error) {
	var (
		e      ledger.Entry
		id     string
		status string
		us     int64
	)
	err := r.Scan(&id, &e.Tenant, &e.IdempotencyKey, &e.Owner, &e.Payer, &e.Amount, &e.AmountAtomic, &e.Asset,
		&e.Network, &e.PayTo, &e.TxHash, &status, &e.RequestID, &e.Resource, &us, &e.Channel, &e.Cumulative)
	if err != nil {
		return ledger.Entry{}, err
	}
	if e.ID, err = uuid.Parse(id); err != nil {
		return ledger.Entry{}, fmt.Errorf("entry id %q: %w", id, err)
	}
	e.Status = ledger.Status(status)
	e.Time = time.UnixMicro(us).UTC()
	return e, nil
}

// ceilMicro is the first whole microsecond at or after t: entries carry
// microsecond times, so e.Time >= t exactly when time_us >= ceilMicro(t).
func ceilMicro(t time.Time) int64 {
	us := t.UnixMicro()
	if time.UnixMicro(us).Before(t) {
		us++
	}
	return us
}

// ListEntries implements ledger.Store.
func (s *Store) ListEntries(ctx context.Context, p ledger.ListEntriesParams) ([]ledger.Entry, error) {
	var (
		where []string
		args  []any
	)
	if p.Tenant != "" {
		where, args = append(where, "tenant = ?"), append(args, p.Tenant)
	}
	if !p.Since.IsZero() {
		where, args = append(where, "time_us >= ?"), append(args, ceilMicro(p.Since))
	}
	if !p.Until.IsZero() {
		where, args = append(where, "time_us < ?"), append(args, ceilMicro(p.Until))
	}
	query := `SELECT ` + entryColumns + ` FROM ledger`
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, " AND ")
	}
	query += ` ORDER BY time_us, rowid`
	if p.Limit > 0 {
		query += ` LIMIT ?`
		args = append(args, p.Limit)
	}
	var out []ledger.Entry
	err := s.read(ctx, func() error {
		out = out[:0]
		rows, err := s.db.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			e, err := scanEntry(rows)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: list entries: %w", err)
	}
	return out, nil
}

// ListAudit implements ledger.Store.
func (s *Store) ListAudit(ctx context.Context, p ledger.ListAuditParams) ([]ledger.AuditRecord, error) {
	limit := int64(-1) // SQLite: a negative LIMIT means none
	if p.Limit > 0 {
		limit = int64(p.Limit)
	}
	var out []ledger.AuditRecord
	err := s.read(ctx, func() error {
		out = out[:0]
		rows, err := s.db.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit_log
			WHERE seq >= ? ORDER BY seq LIMIT ?`, p.FromSeq, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				r    ledger.AuditRecord
				us   int64
				data string
			)
			if err := rows.Scan(&r.Seq, &us, &r.Kind, &r.Tenant, &r.Subject, &data, &r.PrevHash, &r.Hash); err != nil {
				return err
			}
			r.Time = time.UnixMicro(us).UTC()
			r.Data = []byte(data)
			out = append(out, r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: list audit: %w", err)
	}
	return out, nil
}
