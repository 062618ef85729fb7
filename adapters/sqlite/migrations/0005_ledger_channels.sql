-- 0005: payment-channel entries in the ledger (ledger.StatusCharged,
-- StatusClaimed, StatusSwept) with their channel id and cumulative amount.
--
-- SQLite cannot alter a CHECK constraint, so the ledger table is rebuilt:
-- the append-only triggers are dropped for the copy (this migration runs in
-- one transaction with the others, so no writer sees the table without
-- them), every row is copied with its rowid (ListEntries orders by it) and
-- the indexes and triggers are created again as before.
DROP TRIGGER ledger_no_replace;
DROP TRIGGER ledger_no_update;
DROP TRIGGER ledger_no_delete;

CREATE TABLE ledger_v5 (
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
    status          TEXT    NOT NULL CHECK (status IN ('settled', 'pending', 'failed', 'charged', 'claimed', 'swept')),
    request_id      TEXT    NOT NULL,
    resource        TEXT    NOT NULL,
    time_us         INTEGER NOT NULL,
    channel         TEXT    NOT NULL DEFAULT '',
    cumulative      TEXT    NOT NULL DEFAULT '',
    UNIQUE (tenant, idempotency_key)
) STRICT;

INSERT INTO ledger_v5 (rowid, id, tenant, idempotency_key, owner, payer, amount, amount_atomic, asset,
                       network, pay_to, tx_hash, status, request_id, resource, time_us)
SELECT rowid, id, tenant, idempotency_key, owner, payer, amount, amount_atomic, asset,
       network, pay_to, tx_hash, status, request_id, resource, time_us
FROM ledger ORDER BY rowid;

DROP TABLE ledger;
ALTER TABLE ledger_v5 RENAME TO ledger;

CREATE INDEX ledger_tenant_time ON ledger (tenant, time_us);
CREATE INDEX ledger_time ON ledger (time_us);
CREATE INDEX ledger_idempotency_key ON ledger (idempotency_key);
CREATE INDEX ledger_channel ON ledger (channel, time_us) WHERE channel <> '';

CREATE TRIGGER ledger_no_replace BEFORE INSERT ON ledger
WHEN EXISTS (SELECT 1 FROM ledger WHERE id = NEW.id
             OR (tenant = NEW.tenant AND idempotency_key = NEW.idempotency_key))
BEGIN
    SELECT RAISE(ABORT, 'ledger is append-only: duplicate row refused');
END;
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger is append-only: UPDATE refused');
END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger is append-only: DELETE refused');
END;
