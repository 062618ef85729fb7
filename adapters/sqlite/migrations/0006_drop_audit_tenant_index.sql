-- 0006: audit_log_tenant served no query (audit records are read by seq
-- only), and every group commit that appended a record wrote one more page
-- for it: dropped.
DROP INDEX audit_log_tenant;
