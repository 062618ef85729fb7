-- Migration 1: the dispatcher's initial schema.
--
-- Times are INTEGER microseconds (ledger, audit) or nanoseconds (kv expiry)
-- since the Unix epoch, UTC. Later migrations add the metrics event store
-- and the tenant directory source (migration 2 onwards); never edit a
-- migration once released, add a new one.

-- Tenants of the marketplace; doc is the tenant's directory JSON.
CREATE TABLE tenants (
    slug          TEXT    PRIMARY KEY,
    owner_user_id TEXT,
    doc           TEXT    NOT NULL,
    created_us    INTEGER NOT NULL,
    updated_us    INTEGER NOT NULL
) STRICT;

CREATE TABLE users (
    id         TEXT    PRIMARY KEY,
    email      TEXT    UNIQUE,
    name       TEXT    NOT NULL DEFAULT '',
    created_us INTEGER NOT NULL
) STRICT;

-- API keys are stored as SHA-256 hex digests, never raw.
CREATE TABLE api_keys (
    id          TEXT    PRIMARY KEY,
    user_id     TEXT    NOT NULL REFERENCES users (id),
    tenant_slug TEXT    REFERENCES tenants (slug),
    key_hash    TEXT    NOT NULL UNIQUE,
    label       TEXT    NOT NULL DEFAULT '',
    created_us  INTEGER NOT NULL,
    revoked_us  INTEGER
) STRICT;
CREATE INDEX api_keys_user ON api_keys (user_id);

-- The settlement ledger: one row per settlement, unique per tenant and
-- idempotency key. Append-only (see the triggers below).
CREATE TABLE ledger (
    id              TEXT    NOT NULL UNIQUE,
    tenant          TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL,
    owner           TEXT    NOT NULL,
    payer           TEXT    NOT NULL,
    amount          TEXT    NOT NULL,
    amount_atomic   TEXT    NOT NULL,
    asset           TEXT    NOT NULL,
    network         TEXT    NOT NULL,
    pay_to          TEXT    NOT NULL,
    tx_hash         TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('settled', 'pending', 'failed')),
    request_id      TEXT    NOT NULL,
    resource        TEXT    NOT NULL,
    time_us         INTEGER NOT NULL,
    UNIQUE (tenant, idempotency_key)
) STRICT;
CREATE INDEX ledger_tenant_time ON ledger (tenant, time_us);
CREATE INDEX ledger_time ON ledger (time_us);

-- The hash-chained audit log (see package ledger for the hash). seq is
-- assigned by the adapter as tail+1 inside the writing transaction; data is
-- kept byte for byte, as TEXT, never reformatted.
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY CHECK (seq >= 1),
    time_us   INTEGER NOT NULL,
    kind      TEXT    NOT NULL,
    tenant    TEXT    NOT NULL,
    subject   TEXT    NOT NULL,
    data      TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
) STRICT;
CREATE INDEX audit_log_tenant ON audit_log (tenant, seq);

-- Append-only: UPDATE and DELETE raise, and so does an INSERT that would
-- replace an existing row (INSERT OR REPLACE deletes without firing DELETE
-- triggers, so it is caught before the conflict is resolved).
CREATE TRIGGER ledger_no_replace BEFORE INSERT ON ledger
WHEN EXISTS (SELECT 1 FROM ledger WHERE id = NEW.id
             OR (tenant = NEW.tenant AND idempotency_key = NEW.idempotency_key))
BEGIN
    SELECT RAISE(ABORT, 'ledger is append-only: duplicate row refused');
END;
CREATE TRIGGER audit_log_no_replace BEFORE INSERT ON audit_log
WHEN EXISTS (SELECT 1 FROM audit_log WHERE seq = NEW.seq)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: duplicate seq refused');
END;
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger is append-only: UPDATE refused');
END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger is append-only: DELETE refused');
END;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused');
END;

-- The kv port: counters (n) and values (v) share one key space; payment
-- idempotency records, quotas, spend caps and rate limits all live here.
-- exp is the expiry in Unix nanoseconds, NULL for never.
CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    v   BLOB,
    n   INTEGER,
    exp INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX kv_exp ON kv (exp) WHERE exp IS NOT NULL;
