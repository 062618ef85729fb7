-- 0004: operations (package ops). The users and api_keys tables of 0002
-- serve ops.Users as they are.
--
-- Payment status looks settlements up by idempotency key across tenants
-- (ledger.KeyLookup), which the (tenant, idempotency_key) unique index
-- cannot serve.
CREATE INDEX ledger_idempotency_key ON ledger (idempotency_key);

-- Uploaded data sets (ops.Datasets) served by the built-in CSV worker.
-- data is the uploaded file byte for byte; sha256 its lowercase hex digest.
CREATE TABLE datasets (
    name          text COLLATE "C" PRIMARY KEY,
    owner_user_id text NOT NULL DEFAULT '',
    content_type  text NOT NULL,
    sha256        text NOT NULL,
    size          bigint NOT NULL,
    data          bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
