-- 0002: tenants, users, API keys, the settlement ledger and the audit log.
--
-- Times are timestamptz (microsecond precision, UTC on the wire). Strings
-- that are compared or sorted as keys use the "C" collation, so ordering is
-- bytewise and does not depend on the server's locale.

-- The tenant directory (tenant.Store): one row per tenant, doc is the
-- tenant's JSON as tenant.Tenant marshals it, kept as text. position is the
-- tenant's place in the directory; SaveTenants replaces every row at once.
CREATE TABLE tenants (
    slug          text COLLATE "C" PRIMARY KEY,
    position      integer NOT NULL,
    owner_user_id text NOT NULL DEFAULT '',
    doc           text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id         text COLLATE "C" PRIMARY KEY,
    email      text UNIQUE,
    name       text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored as SHA-256 hex digests, never raw. tenant_slug has no
-- foreign key: the directory is replaced as a whole, and a key whose tenant
-- left the directory is simply inert.
CREATE TABLE api_keys (
    id          text COLLATE "C" PRIMARY KEY,
    user_id     text COLLATE "C" NOT NULL REFERENCES users (id),
    tenant_slug text COLLATE "C",
    key_hash    text NOT NULL UNIQUE,
    label       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_user ON api_keys (user_id);

-- The settlement ledger: one row per settlement, unique per tenant and
-- idempotency key. pos is the append order (entries are inserted while the
-- audit chain's lock is held, so pos follows commit order).
CREATE TABLE ledger (
    pos             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              uuid NOT NULL UNIQUE,
    tenant          text COLLATE "C" NOT NULL,
    idempotency_key text COLLATE "C" NOT NULL,
    owner           text NOT NULL,
    payer           text NOT NULL,
    amount          text NOT NULL,
    amount_atomic   text NOT NULL,
    asset           text NOT NULL,
    network         text NOT NULL,
    pay_to          text NOT NULL,
    tx_hash         text NOT NULL,
    status          text NOT NULL CHECK (status IN ('settled', 'pending', 'failed')),
    request_id      text NOT NULL,
    resource        text NOT NULL,
    time            timestamptz NOT NULL,
    UNIQUE (tenant, idempotency_key)
);
CREATE INDEX ledger_time ON ledger (time, pos);
CREATE INDEX ledger_tenant_time ON ledger (tenant, time, pos);

-- The hash-chained audit log (see package ledger for the hash). The adapter
-- assigns seq as tail+1 under a transaction-scoped advisory lock; data is
-- kept byte for byte as bytea, never as json/jsonb.
CREATE TABLE audit_log (
    seq       bigint PRIMARY KEY CHECK (seq >= 1),
    time      timestamptz NOT NULL,
    kind      text NOT NULL,
    tenant    text COLLATE "C" NOT NULL,
    subject   text NOT NULL,
    data      bytea NOT NULL,
    prev_hash text NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash      text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$')
);
CREATE INDEX audit_log_tenant ON audit_log (tenant, seq);

-- Append-only: UPDATE, DELETE and TRUNCATE raise. The functions run with the
-- search_path of this migration (the store's schema), whatever the caller's.
CREATE FUNCTION refuse_change() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'prohibited_sql_statement_attempted';
END
$$;
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- The chain has no gap and no fork: a new record must be the tail's
-- successor and name the tail's hash. (Two writers that skip the adapter's
-- lock could both pass this check; the primary key on seq then refuses the
-- second.)
CREATE FUNCTION audit_log_link() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    tail_seq  bigint := 0;
    tail_hash text := repeat('0', 64);
BEGIN
    SELECT a.seq, a.hash INTO tail_seq, tail_hash FROM audit_log a ORDER BY a.seq DESC LIMIT 1;
    IF NOT FOUND THEN
        tail_seq := 0;
        tail_hash := repeat('0', 64);
    END IF;
    IF NEW.seq <> tail_seq + 1 OR NEW.prev_hash <> tail_hash THEN
        RAISE EXCEPTION 'audit_log: record % does not follow the tail % (a gap or a fork)', NEW.seq, tail_seq
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_log_link BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_link();
