package ops

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// Label values that stand for a bucket of values rather than one value.
const (
	// LabelOther replaces a label value once its label has as many distinct
	// values as it may have, and a value that is not a well-formed label
	// value (too long, not UTF-8, or not matching the label's syntax).
	LabelOther = "other"
	// LabelNone is the value of a label whose value is empty.
	LabelNone = "none"
)

// labelSet bounds the values one label may take, so that a client, a
// worker or a misconfigured directory cannot grow the number of series
// without limit. Values in known are always kept; other well-formed values
// are admitted first come, first served until max of them were seen; after
// that, and for malformed values, the value is LabelOther.
//
// The lookup of a value already seen takes no lock.
type labelSet struct {
	seen   sync.Map // string -> struct{}
	mu     sync.Mutex
	extra  atomic.Int64 // admitted values outside known
	max    int64
	maxLen int
	valid  func(string) bool
}

func newLabelSet(known []string, maxExtra, maxLen int, valid func(string) bool) *labelSet {
	s := &labelSet{max: int64(maxExtra), maxLen: maxLen, valid: valid}
	for _, k := range known {
		s.seen.Store(k, struct{}{})
	}
	return s
}

// value returns the label value to use for v.
func (s *labelSet) value(v string) string {
	if v == "" {
		return LabelNone
	}
	if _, ok := s.seen.Load(v); ok {
		return v
	}
	if len(v) > s.maxLen || !utf8.ValidString(v) || (s.valid != nil && !s.valid(v)) {
		return LabelOther
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.seen.Load(v); ok {
		return v
	}
	if s.extra.Load() >= s.max {
		return LabelOther
	}
	s.extra.Add(1)
	s.seen.Store(v, struct{}{})
	return v
}

// isLabelToken reports whether v is made of lower-case ASCII letters, digits,
// '-', '_' and '.': the shape of slugs, lifecycles, schemes and statuses.
func isLabelToken(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Lifecycles are the analytics outcomes of DESIGN section 9; they are
// always label values of dispatcher_requests_total.
var knownLifecycles = []string{
	"served", "payment_settled", "payment_replayed", "payment_challenged",
	"payment_invalid", "payment_settlement_failed", "rate_limited",
	"usage_quota_exceeded", "spend_cap_exceeded", "worker_error",
}

// knownSchemes are the payment schemes of DESIGN section 14.
var knownSchemes = []string{"exact", "exact-permit2", "upto", "batch-settlement"}

// knownSettlementStatuses are the ledger's settlement outcomes.
var knownSettlementStatuses = []string{"settled", "pending", "failed"}

// statusLabels holds the status label of every HTTP status code 0-599:
// the code itself when net/http knows it, its class ("2xx") otherwise.
var statusLabels = func() [600]string {
	var t [600]string
	for c := range t {
		switch {
		case c < 100:
			t[c] = LabelOther
		case http.StatusText(c) != "":
			t[c] = strconv.Itoa(c)
		default:
			t[c] = strconv.Itoa(c/100) + "xx"
		}
	}
	return t
}()

// statusLabel bounds an HTTP status to one of about 70 label values.
func statusLabel(code int) string {
	if code < 0 || code >= len(statusLabels) {
		return LabelOther
	}
	return statusLabels[code]
}
