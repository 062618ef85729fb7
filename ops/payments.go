package ops

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
)

// AuthorizationKeyPrefix is what the payment stage puts before an
// authorization id to make its idempotency key (see x402.IdempotencyKey).
const AuthorizationKeyPrefix = x402.KeyPrefixAuthorization

// PaymentKeyCandidates returns the ledger keys a client's key may stand
// for, in the order they are tried: the key as given (the value of
// X-Payment-Idempotency-Key in the paid answer), then, for a key without
// one of the payment stage's prefixes, the key the stage derives from a
// payment-identifier id ("pid:"), from an Idempotency-Key header value
// ("hdr:", or "hdrsha256:" for a long or non-ASCII one) and from an
// authorization id ("auth:").
func PaymentKeyCandidates(key string) []string {
	out := []string{key}
	for _, p := range []string{x402.KeyPrefixPaymentID, x402.KeyPrefixHeader, x402.KeyPrefixHeaderHash, x402.KeyPrefixAuthorization} {
		if strings.HasPrefix(key, p) {
			return out
		}
	}
	add := func(k string) {
		if len(k) <= ledger.MaxKeyLen && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	add(x402.KeyPrefixPaymentID + key)
	add(x402.IdempotencyKeyFor(nil, http.Header{x402.HeaderPaymentIdempotencyKey: {key}}, ""))
	add(x402.KeyPrefixAuthorization + key)
	return out
}

// PaymentStatus is the public answer of GET /__platform/payments/<key>: the
// ledger's record of one payment.
type PaymentStatus struct {
	OK             bool          `json:"ok"`
	IdempotencyKey string        `json:"idempotencyKey"`
	Status         ledger.Status `json:"status"`
	Amount         string        `json:"amount"`
	AmountAtomic   string        `json:"amountAtomic"`
	Asset          string        `json:"asset"`
	Transaction    string        `json:"transaction"`
	Network        string        `json:"network"`
	Tenant         string        `json:"tenant"`
	Time           time.Time     `json:"time"`
}

// ParsePaymentKey checks a payment key taken from a URL: 1 to
// ledger.MaxKeyLen bytes of printable text.
func ParsePaymentKey(key string) (string, error) {
	if key == "" || len(key) > ledger.MaxKeyLen {
		return "", fmt.Errorf("%w: a payment key is 1 to %d bytes", errBadBody, ledger.MaxKeyLen)
	}
	if strings.ContainsFunc(key, isControl) {
		return "", fmt.Errorf("%w: a payment key has no control characters", errBadBody)
	}
	return key, nil
}

// LookupPayment finds the ledger's record of a payment by its idempotency
// key, or by the id it was made from (see PaymentKeyCandidates). When the
// key names payments of several tenants, the latest wins; tenantSlug, when
// given, narrows the search to one tenant. It never lists: the answer is
// one record or ErrNotFound.
func LookupPayment(r *http.Request, l *ledger.Ledger, key, tenantSlug string) (ledger.Entry, error) {
	ctx := r.Context()
	for _, k := range PaymentKeyCandidates(key) {
		if tenantSlug != "" {
			e, err := l.Entry(ctx, tenantSlug, k)
			if errors.Is(err, ledger.ErrNotFound) {
				continue
			}
			return e, err
		}
		es, err := l.EntriesByKey(ctx, k)
		if err != nil {
			return ledger.Entry{}, err
		}
		if len(es) > 0 {
			return es[len(es)-1], nil
		}
	}
	return ledger.Entry{}, fmt.Errorf("%w: no payment with that key", ErrNotFound)
}

func (h *AdminHandler) payment(w http.ResponseWriter, r *http.Request, rid, key string) {
	key, err := ParsePaymentKey(key)
	if err != nil {
		h.fail(w, r, rid, err)
		return
	}
	slug := r.URL.Query().Get("tenant")
	if slug != "" && !tenant.ValidSlug(slug) {
		h.fail(w, r, rid, fmt.Errorf("%w: tenant %q is not a valid slug", errBadBody, clip(slug)))
		return
	}
	e, err := LookupPayment(r, h.cfg.Ledger, key, slug)
	if err != nil {
		h.fail(w, r, rid, err)
		return
	}
	writeJSON(w, http.StatusOK, PaymentStatus{
		OK: true, IdempotencyKey: e.IdempotencyKey, Status: e.Status, Amount: e.Amount,
		AmountAtomic: e.AmountAtomic, Asset: e.Asset, Transaction: e.TxHash, Network: e.Network,
		Tenant: e.Tenant, Time: e.Time,
	})
}
