-- Migration 3: operations (package ops). The users and api_keys tables of
-- migration 1 serve ops.Users as they are.
--
-- Payment status looks settlements up by idempotency key across tenants
-- (ledger.KeyLookup), which the (tenant, idempotency_key) unique index
-- cannot serve.
CREATE INDEX ledger_idempotency_key ON ledger (idempotency_key);

-- Uploaded data sets (ops.Datasets) served by the built-in CSV worker.
-- data is the uploaded file byte for byte; sha256 is its lowercase hex
-- digest; times are Unix microseconds, UTC.
CREATE TABLE datasets (
    name          TEXT    PRIMARY KEY,
    owner_user_id TEXT    NOT NULL DEFAULT '',
    content_type  TEXT    NOT NULL,
    sha256        TEXT    NOT NULL,
    size          INTEGER NOT NULL,
    data          BLOB    NOT NULL,
    created_us    INTEGER NOT NULL,
    updated_us    INTEGER NOT NULL
) STRICT;
