package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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

const auditColumns = `seq, time_us, kind, tenant, subject, data, prev_hash, hash`

const (
	tailSQL        = `SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1`
	insertAuditSQL = `INSERT INTO audit_log (` + auditColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`
	// insertEntrySQL inserts the entry unless its tenant and idempotency
	// key exist: the duplicate check and the insert in one statement (a
	// duplicate produces no row, so the append-only trigger, which
	// refuses duplicate rows, does not fire).
	insertEntrySQL = `INSERT INTO ledger (` + entryColumns + `)
			SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17
			WHERE NOT EXISTS (SELECT 1 FROM ledger WHERE tenant = ?2 AND idempotency_key = ?3)`
)

// AppendSettlement implements ledger.Store. The duplicate check, the
// read of the chain's tail and both inserts happen in one immediate
// transaction, shared with the other writes queued at the same moment
// (group commit, see the package documentation): the chain is extended in
// queue order inside that transaction, each settlement sealed against the
// one before it, and each caller is answered after the COMMIT.
func (s *Store) AppendSettlement(ctx context.Context, e ledger.Entry, rec ledger.AuditRecord) (ledger.AuditRecord, error) {
	var (
		sealed ledger.AuditRecord
		dup    bool
	)
	err := s.group(ctx, func(g *groupTx) error {
		st, err := g.stmt(insertEntrySQL)
		if err != nil {
			return err
		}
		res, err := st.ExecContext(g.ctx, e.ID.String(), e.Tenant, e.IdempotencyKey, e.Owner, e.Payer, e.Amount,
			e.AmountAtomic, e.Asset, e.Network, e.PayTo, e.TxHash, string(e.Status), e.RequestID, e.Resource,
			e.Time.UnixMicro(), e.Channel, e.Cumulative)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if dup = n == 0; dup {
			return nil // a duplicate writes nothing
		}
		sealed, err = g.appendAudit(rec)
		return err
	})
	if err == nil && dup {
		return ledger.AuditRecord{}, ledger.ErrDuplicate
	}
	if err != nil {
		return ledger.AuditRecord{}, fmt.Errorf("sqlite: append settlement: %w", err)
	}
	return sealed, nil
}

// AppendAudit implements ledger.Store, group-committed like
// AppendSettlement.
func (s *Store) AppendAudit(ctx context.Context, rec ledger.AuditRecord) (ledger.AuditRecord, error) {
	var sealed ledger.AuditRecord
	err := s.group(ctx, func(g *groupTx) error {
		var err error
		sealed, err = g.appendAudit(rec)
		return err
	})
	if err != nil {
		return ledger.AuditRecord{}, fmt.Errorf("sqlite: append audit: %w", err)
	}
	return sealed, nil
}

// appendAudit seals rec against the chain's tail and inserts it. The tail
// is read once per transaction and then carried from record to record, so
// a group of appends reads it once; a failed insert leaves it unchanged
// (and the whole group is then rolled back anyway).
func (g *groupTx) appendAudit(rec ledger.AuditRecord) (ledger.AuditRecord, error) {
	if !g.tailRead {
		st, err := g.stmt(tailSQL)
		if err != nil {
			return ledger.AuditRecord{}, err
		}
		g.tailSeq, g.tailHash = 0, ledger.GenesisHash
		err = st.QueryRowContext(g.ctx).Scan(&g.tailSeq, &g.tailHash)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return ledger.AuditRecord{}, fmt.Errorf("read chain tail: %w", err)
		}
		g.tailRead = true
	}
	sealed := ledger.Seal(rec, g.tailSeq, g.tailHash)
	sealed.Data = append([]byte(nil), rec.Data...)
	st, err := g.stmt(insertAuditSQL)
	if err != nil {
		return ledger.AuditRecord{}, err
	}
	_, err = st.ExecContext(g.ctx, sealed.Seq, sealed.Time.UnixMicro(), sealed.Kind, sealed.Tenant, sealed.Subject,
		string(sealed.Data), sealed.PrevHash, sealed.Hash)
	if err != nil {
		return ledger.AuditRecord{}, fmt.Errorf("insert audit record %d: %w", sealed.Seq, err)
	}
	g.tailSeq, g.tailHash = sealed.Seq, sealed.Hash
	return sealed, nil
}

// GetEntry implements ledger.Store.
func (s *Store) GetEntry(ctx context.Context, tenant, idempotencyKey string) (ledger.Entry, error) {
	var e ledger.Entry
	err := s.read(ctx, func() error {
		var err error
		e, err = scanEntry(s.entryStmt.QueryRowContext(ctx, tenant, idempotencyKey))
		return err
	})
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
