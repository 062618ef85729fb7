-- 0007: less work while the audit chain's lock is held (see chain.go).
--
-- Entries are now inserted before the lock is taken, so ledger.pos is the
-- order in which their rows were inserted, no longer the order in which
-- they committed (0002 says otherwise); nothing reads it as commit order:
-- entries are listed by time, pos breaking ties.
--
-- audit_log_tenant served no query (audit records are read by seq only),
-- and every append paid for it under the lock: dropped.
--
-- The gap-or-fork check ran once per inserted row, a PL/pgSQL call reading
-- the tail through the index each time. It now runs once per statement
-- over the statement's rows (a transition table): every new record must
-- follow the record before it (seq - 1, which may be another row of the
-- same statement) and name its hash, or be record 1 naming the genesis
-- hash. With the primary key on seq this refuses exactly what the per-row
-- check refused: a gap (no record at seq - 1) and a fork (a prev_hash that
-- is not its predecessor's hash). It is an AFTER trigger, so it sees the
-- statement's rows in the table and refuses by aborting the statement.
--
-- The checks that prev_hash and hash are 64 lowercase hex digits were
-- regular expressions with a bounded repetition ({64}), which PostgreSQL
-- runs slowly: two of them were 40% of the time a group held the lock.
-- The same rule, without a regular expression: 64 bytes that decode as hex
-- and encode back to themselves (encode writes lowercase). A byte that is
-- not a hex digit makes decode raise an error, which refuses the row too.
DROP INDEX audit_log_tenant;
ALTER TABLE audit_log
    DROP CONSTRAINT audit_log_prev_hash_check,
    DROP CONSTRAINT audit_log_hash_check,
    ADD CONSTRAINT audit_log_prev_hash_check
        CHECK (octet_length(prev_hash) = 64 AND encode(decode(prev_hash, 'hex'), 'hex') = prev_hash),
    ADD CONSTRAINT audit_log_hash_check
        CHECK (octet_length(hash) = 64 AND encode(decode(hash, 'hex'), 'hex') = hash);
DROP TRIGGER audit_log_link ON audit_log;
DROP FUNCTION audit_log_link();

CREATE FUNCTION audit_log_link() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    bad bigint;
BEGIN
    SELECT n.seq INTO bad
    FROM audit_log_new n
    LEFT JOIN audit_log p ON p.seq = n.seq - 1
    WHERE CASE WHEN n.seq = 1 THEN n.prev_hash <> repeat('0', 64)
               ELSE p.seq IS NULL OR n.prev_hash <> p.hash END
    ORDER BY n.seq
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'audit_log: record % does not follow the record before it (a gap or a fork)', bad
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER audit_log_link AFTER INSERT ON audit_log
    REFERENCING NEW TABLE AS audit_log_new
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_link();
