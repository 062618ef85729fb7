-- 0006: payment-channel entries in the ledger (ledger.StatusCharged,
-- StatusClaimed, StatusSwept) with their channel id and cumulative amount.
-- Adding columns with a constant default rewrites no row, so the
-- append-only triggers are not involved.
ALTER TABLE ledger DROP CONSTRAINT ledger_status_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_status_check
    CHECK (status IN ('settled', 'pending', 'failed', 'charged', 'claimed', 'swept'));
ALTER TABLE ledger ADD COLUMN channel text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE ledger ADD COLUMN cumulative text NOT NULL DEFAULT '';
CREATE INDEX ledger_channel ON ledger (channel, time, pos) WHERE channel <> '';
