package memory

import (
	"context"
	"encoding/json"
	"sort"
	"sync"

	"github.com/402claw/dispatcher/ledger"
)

// Ledger is an in-memory ledger.Store. One mutex guards the entries and the
// audit chain, so the tail read, the seal and the insert of every append
// happen as one step and concurrent appends never fork or gap the chain.
type Ledger struct {
	mu      sync.RWMutex
	entries []ledger.Entry
	byKey   map[ledgerKey]int // index into entries
	audit   []ledger.AuditRecord
}

type ledgerKey struct{ tenant, key string }

var _ ledger.Store = (*Ledger)(nil)

// NewLedger returns an empty in-memory ledger store.
func NewLedger() *Ledger {
	return &Ledger{byKey: make(map[ledgerKey]int)}
}

// AppendSettlement implements ledger.Store.
func (s *Ledger) AppendSettlement(ctx context.Context, e ledger.Entry, rec ledger.AuditRecord) (ledger.AuditRecord, error) {
	if err := ctx.Err(); err != nil {
		return ledger.AuditRecord{}, err
	}
	k := ledgerKey{e.Tenant, e.IdempotencyKey}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.byKey[k]; dup {
		return ledger.AuditRecord{}, ledger.ErrDuplicate
	}
	sealed := s.appendAuditLocked(rec)
	s.byKey[k] = len(s.entries)
	s.entries = append(s.entries, e)
	return cloneRecord(sealed), nil
}

// AppendAudit implements ledger.Store.
func (s *Ledger) AppendAudit(ctx context.Context, rec ledger.AuditRecord) (ledger.AuditRecord, error) {
	if err := ctx.Err(); err != nil {
		return ledger.AuditRecord{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return cloneRecord(s.appendAuditLocked(rec)), nil
}

func (s *Ledger) appendAuditLocked(rec ledger.AuditRecord) ledger.AuditRecord {
	tailSeq, tailHash := int64(0), ledger.GenesisHash
	if n := len(s.audit); n > 0 {
		tailSeq, tailHash = s.audit[n-1].Seq, s.audit[n-1].Hash
	}
	rec.Data = append(json.RawMessage(nil), rec.Data...)
	sealed := ledger.Seal(rec, tailSeq, tailHash)
	s.audit = append(s.audit, sealed)
	return sealed
}

// GetEntry implements ledger.Store.
func (s *Ledger) GetEntry(ctx context.Context, tenant, idempotencyKey string) (ledger.Entry, error) {
	if err := ctx.Err(); err != nil {
		return ledger.Entry{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	i, ok := s.byKey[ledgerKey{tenant, idempotencyKey}]
	if !ok {
		return ledger.Entry{}, ledger.ErrNotFound
	}
	return s.entries[i], nil
}

// ListEntries implements ledger.Store.
func (s *Ledger) ListEntries(ctx context.Context, p ledger.ListEntriesParams) ([]ledger.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	var out []ledger.Entry
	for _, e := range s.entries {
		if p.Match(e) {
			out = append(out, e)
		}
	}
	s.mu.RUnlock()
	// Stable, so equal times keep append order.
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	if p.Limit > 0 && len(out) > p.Limit {
		out = out[:p.Limit]
	}
	return out, nil
}

// ListAudit implements ledger.Store.
func (s *Ledger) ListAudit(ctx context.Context, p ledger.ListAuditParams) ([]ledger.AuditRecord, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	from := p.FromSeq
	if from < 1 {
		from = 1
	}
	// Seqs are 1..len(audit) without gaps, so seq n is at index n-1.
	if from > int64(len(s.audit)) {
		return nil, nil
	}
	rest := s.audit[from-1:]
	if p.Limit > 0 && len(rest) > p.Limit {
		rest = rest[:p.Limit]
	}
	out := make([]ledger.AuditRecord, len(rest))
	for i, r := range rest {
		out[i] = cloneRecord(r)
	}
	return out, nil
}

func cloneRecord(r ledger.AuditRecord) ledger.AuditRecord {
	r.Data = append(json.RawMessage(nil), r.Data...)
	return r
}
