package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/402claw/dispatcher/ledger"
)

var _ ledger.Store = (*Store)(nil)

const entryColumns = `id, tenant, idempotency_key, owner, payer, amount, amount_atomic, asset,
	network, pay_to, tx_hash, status, request_id, resource, time, channel, cumulative`

const auditColumns = `seq, time, kind, tenant, subject, data, prev_hash, hash`

type ledgerQueries struct {
	insertEntries, appendChain, getEntry, listEntries, listAudit string
	chainLock                                                    int64
}

// netstring is the SQL of the netstring of the text expression x (its
// length in bytes, a colon, x and a comma), as ledger.HashRecord encodes
// each field of a record.
func netstring(x string) string {
	return `octet_length(` + x + `)::text || ':' || ` + x + ` || ','`
}

func buildLedgerQueries(schema string) ledgerQueries {
	r := strings.NewReplacer(
		"{ledger}", pgx.Identifier{schema, "ledger"}.Sanitize(),
		"{audit}", pgx.Identifier{schema, "audit_log"}.Sanitize(),
		"{entryColumns}", entryColumns,
		"{auditColumns}", auditColumns,
		// ledger.HashRecord's preimage of record r (seq c.seq+1, previous
		// hash c.hash): the version, prev hash, seq, time (UTC,
		// microseconds), kind, tenant, subject and data, each a netstring.
		"{preimage}", `convert_to('16:402claw.audit.v1,' || `+netstring(`c.hash`)+` || `+
			netstring(`(c.seq + 1)::text`)+` || `+
			netstring(`to_char(r.time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`)+` || `+
			netstring(`r.kind`)+` || `+netstring(`r.tenant`)+` || `+netstring(`r.subject`)+` || `+
			`length(r.data)::text || ':', 'UTF8') || r.data || '\x2c'::bytea`,
	)
	return ledgerQueries{
		chainLock: lockKey("audit_chain:" + schema),
		// insertEntries inserts a group's entries ($1..$17; a (tenant,
		// key) already stored is skipped) before the chain's lock is
		// taken: the lock orders the audit records, and the entries need
		// no order beyond their records'.
		insertEntries: r.Replace(`INSERT INTO {ledger} ({entryColumns})
			SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
				$8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::timestamptz[],
				$16::text[], $17::text[])
			ON CONFLICT (tenant, idempotency_key) DO NOTHING`),
		// appendChain, run under the chain's lock, seals and inserts, in
		// order, a group's records ($1..$6, $6 naming each record's entry,
		// NULL for a record alone) except those whose entry this
		// transaction did not insert (a duplicate key: its row's xmin is
		// another transaction's), each hashed against the one before it
		// starting from the tail. It returns each written record's
		// position in $1.., seq, prev hash and hash. Sealing in the server
		// keeps the lock's holder from waiting on a round trip to the
		// client, and on its scheduling, between reading the tail and
		// committing.
		appendChain: r.Replace(`WITH RECURSIVE
			recs AS (
				SELECT u.time, u.kind, u.tenant, u.subject, u.data, u.ord, row_number() OVER (ORDER BY u.ord) AS n
				FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::uuid[])
					WITH ORDINALITY AS u(time, kind, tenant, subject, data, entry, ord)
				WHERE u.entry IS NULL OR EXISTS (
					SELECT 1 FROM {ledger} l WHERE l.id = u.entry AND l.xmin = pg_current_xact_id()::xid)),
			chain (n, seq, hash, prev) AS (
				SELECT 0::bigint,
					COALESCE((SELECT seq FROM {audit} ORDER BY seq DESC LIMIT 1), 0),
					COALESCE((SELECT hash FROM {audit} ORDER BY seq DESC LIMIT 1), repeat('0', 64)),
					''::text
				UNION ALL
				SELECT r.n, c.seq + 1, encode(sha256({preimage}), 'hex'), c.hash
				FROM chain c JOIN recs r ON r.n = c.n + 1),
			aud AS (
				INSERT INTO {audit} ({auditColumns})
				SELECT c.seq, r.time, r.kind, r.tenant, r.subject, r.data, c.prev, c.hash
				FROM chain c JOIN recs r ON r.n = c.n
				ORDER BY c.seq
				RETURNING seq)
			SELECT r.ord, c.seq, c.prev, c.hash
			FROM chain c JOIN recs r ON r.n = c.n JOIN aud a ON a.seq = c.seq
			ORDER BY c.seq`),
		getEntry: r.Replace(`SELECT {entryColumns} FROM {ledger} WHERE tenant = $1 AND idempotency_key = $2`),
		listEntries: r.Replace(`SELECT {entryColumns} FROM {ledger}
			WHERE ($1::text = '' OR tenant = $1)
			  AND ($2::timestamptz IS NULL OR time >= $2)
			  AND ($3::timestamptz IS NULL OR time < $3)
			ORDER BY time, pos
			LIMIT $4`),
		listAudit: r.Replace(`SELECT {auditColumns} FROM {audit} WHERE seq >= $1 ORDER BY seq LIMIT $2`),
	}
}

// AppendSettlement implements ledger.Store: the entry and its audit record
// are written in one transaction that holds the chain's lock (see
// appendChain). A duplicate (tenant, idempotency key) writes neither.
func (s *Store) AppendSettlement(ctx context.Context, e ledger.Entry, rec ledger.AuditRecord) (ledger.AuditRecord, error) {
	e.Time = e.Time.UTC().Truncate(time.Microsecond)
	sealed, err := s.appendChain(ctx, &e, rec)
	if errors.Is(err, ledger.ErrDuplicate) {
		return ledger.AuditRecord{}, ledger.ErrDuplicate
	}
	if err != nil {
		return ledger.AuditRecord{}, fmt.Errorf("postgres: append settlement %s/%s: %w", e.Tenant, e.IdempotencyKey, err)
	}
	return sealed, nil
}

// AppendAudit implements ledger.Store.
func (s *Store) AppendAudit(ctx context.Context, rec ledger.AuditRecord) (ledger.AuditRecord, error) {
	sealed, err := s.appendChain(ctx, nil, rec)
	if err != nil {
		return ledger.AuditRecord{}, fmt.Errorf("postgres: append audit %s: %w", rec.Kind, err)
	}
	return sealed, nil
}

func scanEntry(row pgx.Row) (ledger.Entry, error) {
	var (
		e      ledger.Entry
		status string
	)
	err := row.Scan(&e.ID, &e.Tenant, &e.IdempotencyKey, &e.Owner, &e.Payer, &e.Amount, &e.AmountAtomic, &e.Asset,
		&e.Network, &e.PayTo, &e.TxHash, &status, &e.RequestID, &e.Resource, &e.Time, &e.Channel, &e.Cumulative)
	if err != nil {
		return ledger.Entry{}, err
	}
	e.Status = ledger.Status(status)
	e.Time = e.Time.UTC()
	return e, nil
}

// GetEntry implements ledger.Store.
func (s *Store) GetEntry(ctx context.Context, tenant, idempotencyKey string) (ledger.Entry, error) {
	e, err := scanEntry(s.pool.QueryRow(ctx, s.lq.getEntry, tenant, idempotencyKey))
	if errors.Is(err, pgx.ErrNoRows) {
		return ledger.Entry{}, ledger.ErrNotFound
	}
	if err != nil {
		return ledger.Entry{}, fmt.Errorf("postgres: get entry %s/%s: %w", tenant, idempotencyKey, err)
	}
	return e, nil
}

// ceilMicro is the first whole microsecond at or after t: entries carry
// microsecond times, so e.Time >= t exactly when e.Time >= ceilMicro(t).
func ceilMicro(t time.Time) time.Time {
	c := t.Truncate(time.Microsecond)
	if c.Before(t) {
		c = c.Add(time.Microsecond)
	}
	return c.UTC()
}

// ListEntries implements ledger.Store.
func (s *Store) ListEntries(ctx context.Context, p ledger.ListEntriesParams) ([]ledger.Entry, error) {
	var since, until *time.Time
	if !p.Since.IsZero() {
		t := ceilMicro(p.Since)
		since = &t
	}
	if !p.Until.IsZero() {
		t := ceilMicro(p.Until)
		until = &t
	}
	var limit *int64
	if p.Limit > 0 {
		n := int64(p.Limit)
		limit = &n
	}
	rows, err := s.pool.Query(ctx, s.lq.listEntries, p.Tenant, since, until, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: list entries: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ledger.Entry, error) { return scanEntry(r) })
	if err != nil {
		return nil, fmt.Errorf("postgres: list entries: %w", err)
	}
	return out, nil
}

// ListAudit implements ledger.Store.
func (s *Store) ListAudit(ctx context.Context, p ledger.ListAuditParams) ([]ledger.AuditRecord, error) {
	var limit *int64
	if p.Limit > 0 {
		n := int64(p.Limit)
		limit = &n
	}
	rows, err := s.pool.Query(ctx, s.lq.listAudit, p.FromSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: list audit: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ledger.AuditRecord, error) {
		var a ledger.AuditRecord
		if err := r.Scan(&a.Seq, &a.Time, &a.Kind, &a.Tenant, &a.Subject, &a.Data, &a.PrevHash, &a.Hash); err != nil {
			return a, err
		}
		a.Time = a.Time.UTC()
		if a.Data == nil {
			a.Data = []byte{}
		}
		return a, nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: list audit: %w", err)
	}
	return out, nil
}

// IsAppendOnlyViolation reports whether err is PostgreSQL refusing an
// UPDATE, DELETE or TRUNCATE of the ledger or audit log (the append-only
// triggers of migration 0002).
func IsAppendOnlyViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "2F003"
}
