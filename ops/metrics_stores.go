package ops

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/ledger"
)

// Store operations, the op label of dispatcher_store_duration_seconds.
const (
	StoreKVGet                  = "kv_get"
	StoreKVSet                  = "kv_set"
	StoreKVSetNX                = "kv_setnx"
	StoreKVDelete               = "kv_delete"
	StoreKVIncr                 = "kv_incr"
	StoreKVIncrAll              = "kv_incr_all"
	StoreLedgerAppendSettlement = "ledger_append_settlement"
	StoreLedgerAppendAudit      = "ledger_append_audit"
	StoreLedgerGetEntry         = "ledger_get_entry"
	StoreLedgerListEntries      = "ledger_list_entries"
	StoreLedgerListAudit        = "ledger_list_audit"
	StoreLedgerEntriesByKey     = "ledger_entries_by_key"
)

var storeOps = []string{
	StoreKVGet, StoreKVSet, StoreKVSetNX, StoreKVDelete, StoreKVIncr, StoreKVIncrAll,
	StoreLedgerAppendSettlement, StoreLedgerAppendAudit, StoreLedgerGetEntry,
	StoreLedgerListEntries, StoreLedgerListAudit, StoreLedgerEntriesByKey,
}

// timer observes the duration of one kind of call.
type timer struct {
	obs prometheus.Observer
	now func() time.Time
}

func (m *Metrics) timer(op string) timer {
	return timer{obs: m.store.WithLabelValues(op), now: m.now}
}

// since observes the time since start.
func (t timer) since(start time.Time) { t.obs.Observe(t.now().Sub(start).Seconds()) }

// KVStore returns s with every call timed into
// dispatcher_store_duration_seconds{op="kv_..."}. The wrapper keeps s's
// optional abilities: it is a kv.BatchIncrementer exactly when s is one, so
// quotas keep their one-round-trip path. A nil s is returned as is.
func (m *Metrics) KVStore(s kv.Store) kv.Store {
	if s == nil {
		return nil
	}
	w := &meteredKV{
		next: s, get: m.timer(StoreKVGet), set: m.timer(StoreKVSet), setNX: m.timer(StoreKVSetNX),
		del: m.timer(StoreKVDelete), incr: m.timer(StoreKVIncr),
	}
	if b, ok := s.(kv.BatchIncrementer); ok {
		return &meteredBatchKV{meteredKV: w, batch: b, incrAll: m.timer(StoreKVIncrAll)}
	}
	return w
}

type meteredKV struct {
	next                       kv.Store
	get, set, setNX, del, incr timer
}

var _ kv.Store = (*meteredKV)(nil)

func (s *meteredKV) Get(ctx context.Context, key string) ([]byte, error) {
	defer s.get.since(s.get.now())
	return s.next.Get(ctx, key)
}

func (s *meteredKV) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	defer s.set.since(s.set.now())
	return s.next.Set(ctx, key, value, ttl)
}

func (s *meteredKV) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	defer s.setNX.since(s.setNX.now())
	return s.next.SetNX(ctx, key, value, ttl)
}

func (s *meteredKV) Delete(ctx context.Context, key string) error {
	defer s.del.since(s.del.now())
	return s.next.Delete(ctx, key)
}

func (s *meteredKV) Incr(ctx context.Context, key string, in kv.Increment) (int64, bool, error) {
	defer s.incr.since(s.incr.now())
	return s.next.Incr(ctx, key, in)
}

// Unwrap returns the wrapped store.
func (s *meteredKV) Unwrap() kv.Store { return s.next }

type meteredBatchKV struct {
	*meteredKV
	batch   kv.BatchIncrementer
	incrAll timer
}

var _ kv.BatchIncrementer = (*meteredBatchKV)(nil)

func (s *meteredBatchKV) IncrAll(ctx context.Context, keys []string, ins []kv.Increment) ([]int64, int, error) {
	defer s.incrAll.since(s.incrAll.now())
	return s.batch.IncrAll(ctx, keys, ins)
}

// LedgerStore returns s with every call timed into
// dispatcher_store_duration_seconds{op="ledger_..."}. The wrapper keeps s's
// optional abilities: it is a ledger.KeyLookup exactly when s is one. A nil
// s is returned as is.
func (m *Metrics) LedgerStore(s ledger.Store) ledger.Store {
	if s == nil {
		return nil
	}
	w := &meteredLedger{
		next: s, appendSettlement: m.timer(StoreLedgerAppendSettlement), appendAudit: m.timer(StoreLedgerAppendAudit),
		getEntry: m.timer(StoreLedgerGetEntry), listEntries: m.timer(StoreLedgerListEntries), listAudit: m.timer(StoreLedgerListAudit),
	}
	if kl, ok := s.(ledger.KeyLookup); ok {
		return &meteredKeyLedger{meteredLedger: w, lookup: kl, byKey: m.timer(StoreLedgerEntriesByKey)}
	}
	return w
}

type meteredLedger struct {
	next                                                            ledger.Store
	appendSettlement, appendAudit, getEntry, listEntries, listAudit timer
}

var _ ledger.Store = (*meteredLedger)(nil)

func (s *meteredLedger) AppendSettlement(ctx context.Context, e ledger.Entry, rec ledger.AuditRecord) (ledger.AuditRecord, error) {
	defer s.appendSettlement.since(s.appendSettlement.now())
	return s.next.AppendSettlement(ctx, e, rec)
}

func (s *meteredLedger) AppendAudit(ctx context.Context, rec ledger.AuditRecord) (ledger.AuditRecord, error) {
	defer s.appendAudit.since(s.appendAudit.now())
	return s.next.AppendAudit(ctx, rec)
}

func (s *meteredLedger) GetEntry(ctx context.Context, tenant, idempotencyKey string) (ledger.Entry, error) {
	defer s.getEntry.since(s.getEntry.now())
	return s.next.GetEntry(ctx, tenant, idempotencyKey)
}

func (s *meteredLedger) ListEntries(ctx context.Context, p ledger.ListEntriesParams) ([]ledger.Entry, error) {
	defer s.listEntries.since(s.listEntries.now())
	return s.next.ListEntries(ctx, p)
}

func (s *meteredLedger) ListAudit(ctx context.Context, p ledger.ListAuditParams) ([]ledger.AuditRecord, error) {
	defer s.listAudit.since(s.listAudit.now())
	return s.next.ListAudit(ctx, p)
}

// Unwrap returns the wrapped store.
func (s *meteredLedger) Unwrap() ledger.Store { return s.next }

type meteredKeyLedger struct {
	*meteredLedger
	lookup ledger.KeyLookup
	byKey  timer
}

var _ ledger.KeyLookup = (*meteredKeyLedger)(nil)

func (s *meteredKeyLedger) EntriesByKey(ctx context.Context, key string) ([]ledger.Entry, error) {
	defer s.byKey.since(s.byKey.now())
	return s.lookup.EntriesByKey(ctx, key)
}
