package payment

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/ledger"
)

// KindSettlementIntent is the audit kind of the record the stage writes just
// before it asks the facilitator to settle. Its Data is the ledger entry the
// settlement will produce (status pending, no transaction hash yet).
const KindSettlementIntent = "settlement_intent"

// recoverCursorKey holds, in the KV store, the audit sequence number below
// which every intent is known to have an outcome, so Recover need not read
// the whole audit log again after a restart.
const recoverCursorKey = "x402:recover:cursor"

// recovery is Recover's memory between calls.
type recovery struct {
	mu      sync.Mutex
	scanned int64                    // last audit seq read
	open    map[uuid.UUID]openIntent // by entry id
}

type openIntent struct {
	seq   int64
	at    time.Time
	entry ledger.Entry
}

// RecoverReport says what Recover did.
type RecoverReport struct {
	// Scanned is how many audit records were read.
	Scanned int
	// Recovered lists the entries written as pending for intents that had
	// no outcome.
	Recovered []ledger.Entry
	// Open is how many intents without an outcome are younger than the age
	// asked for and were left alone.
	Open int
}

// Recover closes the crash window of settlement. The stage writes a
// settlement intent to the audit log before it settles; a gateway killed
// after the facilitator moved the money but before the ledger entry was
// written leaves an intent with no outcome. Recover reads the audit log
// (from where its last call, or the cursor kept in the KV store, left off),
// and for each intent with no outcome that is at least olderThan old writes
// its entry with the outcome kept for it (the settle answer is stored with
// the idempotency record, and a failure on its own, before the ledger
// entry is written), or with status pending when none was kept, so the payment is accounted for, counted
// against nothing twice and never settled again (the ledger refuses the key).
//
// Call it once at start-up and then now and then. With a single gateway
// process on the store, start-up may use olderThan 0: no other process can
// have a settlement in flight. With several replicas on one store, use an
// age well above SettleTimeout (say two of them), so an intent that another
// live replica is still settling is not taken for a crashed one.
//
// Recovering an intent whose process died before the facilitator was called
// records a payment that did not happen as pending: the caps count it and
// the authorization cannot be reused, which errs on the side of the payer
// never being charged twice.
func (s *Stage) Recover(ctx context.Context, olderThan time.Duration) (RecoverReport, error) {
	r := &s.rec
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.open == nil {
		r.open = make(map[uuid.UUID]openIntent)
		if raw, err := s.cfg.KV.Get(ctx, recoverCursorKey); err == nil {
			if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil && n > 0 {
				r.scanned = n
			}
		} else if !errors.Is(err, kv.ErrNotFound) {
			return RecoverReport{}, fmt.Errorf("payment: recover: reading the cursor: %w", err)
		}
	}
	var rep RecoverReport
	const page = 1000
	for {
		recs, err := s.cfg.Ledger.AuditLog(ctx, ledger.ListAuditParams{FromSeq: r.scanned + 1, Limit: page})
		if err != nil {
			return rep, fmt.Errorf("payment: recover: %w", err)
		}
		for _, rec := range recs {
			r.scanned = rec.Seq
			rep.Scanned++
			switch {
			case rec.Kind == KindSettlementIntent:
				var e ledger.Entry
				if err := json.Unmarshal(rec.Data, &e); err != nil || e.ID == uuid.Nil {
					s.log.Error("recover: unreadable settlement intent", "seq", rec.Seq, "err", err)
					continue
				}
				r.open[e.ID] = openIntent{seq: rec.Seq, at: rec.Time, entry: e}
			case ledger.IsSettlementKind(rec.Kind):
				var e struct {
					ID uuid.UUID `json:"id"`
				}
				if json.Unmarshal(rec.Data, &e) == nil {
					delete(r.open, e.ID)
				}
			}
		}
		if len(recs) < page {
			break
		}
	}
	now := s.cfg.Now()
	for id, in := range r.open {
		if now.Sub(in.at) < olderThan {
			rep.Open++
			continue
		}
		e := in.entry
		// The key is the authorization's (or the client's for it), which can
		// settle at most once: if the ledger has an entry under it, that
		// entry is this payment's outcome (a retry that settled after a
		// failure the ledger missed), and nothing more is written.
		if _, err := s.cfg.Ledger.Entry(ctx, e.Tenant, e.IdempotencyKey); err == nil {
			delete(r.open, id)
			continue
		} else if !errors.Is(err, ledger.ErrNotFound) {
			return rep, fmt.Errorf("payment: recover: %w", err)
		}
		e.Time, e.TxHash, e.Status = time.Time{}, "", ledger.StatusPending
		// The outcome, when it was kept before the process died, says what
		// really happened: a settled payment keeps its transaction, and a
		// failed one is booked under a key of its own so the payer may
		// pay again.
		o, err := s.knownOutcome(ctx, e)
		if err != nil {
			return rep, fmt.Errorf("payment: recover: %w", err)
		}
		if o != nil {
			e.Status, e.TxHash = o.Status, o.TxHash
			if o.Status == ledger.StatusFailed {
				e.IdempotencyKey += "#failed:" + e.ID.String()
			}
		}
		if !s.recordRecovered(ctx, e) {
			rep.Open++
			continue
		}
		s.log.Warn("recovered a settlement intent with no outcome: recorded as pending",
			"tenant", e.Tenant, "key", e.IdempotencyKey, "requestId", e.RequestID)
		rep.Recovered = append(rep.Recovered, e)
		delete(r.open, id)
	}
	cursor := r.scanned
	for _, in := range r.open {
		if in.seq-1 < cursor {
			cursor = in.seq - 1
		}
	}
	if err := s.cfg.KV.Set(ctx, recoverCursorKey, []byte(strconv.FormatInt(cursor, 10)), 0); err != nil {
		s.log.Warn("recover: saving the cursor failed; the next start reads the audit log again", "err", err)
	}
	return rep, nil
}

// recordRecovered writes a recovered entry; a duplicate (the key settled
// meanwhile) counts as done and writes nothing more.
func (s *Stage) recordRecovered(ctx context.Context, e ledger.Entry) bool {
	_, _, err := s.cfg.Ledger.RecordSettlement(ctx, e)
	if err == nil || errors.Is(err, ledger.ErrDuplicate) {
		return true
	}
	s.log.Error("recover: writing a pending entry failed; it is retried on the next pass", "key", e.IdempotencyKey, "err", err)
	return false
}
