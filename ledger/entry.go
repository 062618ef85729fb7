package ledger

import (
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"
)

// Status is the outcome of a settlement.
type Status string

// Settlement outcomes.
const (
	// StatusSettled: the facilitator settled the payment on chain.
	StatusSettled Status = "settled"
	// StatusPending: the facilitator accepted the payment but did not
	// confirm it; it must never be settled a second time.
	StatusPending Status = "pending"
	// StatusFailed: settlement failed; the client was not charged.
	StatusFailed Status = "failed"
)

// Valid reports whether s is one of the defined statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusSettled, StatusPending, StatusFailed, StatusCharged, StatusClaimed, StatusSwept:
		return true
	}
	return false
}

// MaxKeyLen bounds idempotency keys, tenants and audit subjects, so a client
// cannot make the ledger store arbitrarily large keys.
const MaxKeyLen = 512

// Entry is one settlement in the ledger. Entries are unique per Tenant and
// IdempotencyKey and are never updated or deleted.
//
// The JSON form (field names below) is what settlement audit records embed,
// so it is part of the audit chain's format: fields are never omitted,
// except the channel fields, which entries without a channel never had.
type Entry struct {
	// ID identifies the entry; [Ledger.RecordSettlement] fills it.
	ID uuid.UUID `json:"id"`
	// IdempotencyKey is unique within the tenant.
	IdempotencyKey string `json:"idempotencyKey"`
	// Tenant is the tenant's slug.
	Tenant string `json:"tenant"`
	// Owner is the tenant owner's user id.
	Owner string `json:"owner"`
	// Payer is the paying address.
	Payer string `json:"payer"`
	// Amount is the price in USD as an exact decimal string ("0.01").
	Amount string `json:"amount"`
	// AmountAtomic is the amount in the asset's atomic units, a base-10
	// integer string ("10000" for 0.01 USDC), since it may exceed int64
	// for assets with many decimals.
	AmountAtomic string `json:"amountAtomic"`
	// Asset is the token contract address.
	Asset string `json:"asset"`
	// Network is the CAIP-2 network ("eip155:84532").
	Network string `json:"network"`
	// PayTo is the receiving address.
	PayTo string `json:"payTo"`
	// TxHash is the settlement transaction hash, when there is one.
	TxHash string `json:"txHash"`
	// Status is the settlement outcome.
	Status Status `json:"status"`
	// RequestID is the gateway request id (X-Request-Id).
	RequestID string `json:"requestId"`
	// Resource is the paid resource URL.
	Resource string `json:"resource"`
	// Time is when the settlement was recorded, in UTC with microsecond
	// precision; [Ledger.RecordSettlement] fills it when zero.
	Time time.Time `json:"time"`
	// Channel is the payment channel of a charge or claim (StatusCharged,
	// StatusClaimed), "" otherwise. Omitted from the JSON when empty, so
	// entries without a channel encode as they always did.
	Channel string `json:"channel,omitempty"`
	// Cumulative is, for a charge, the channel's chargedCumulativeAmount
	// after it; for a claim, the claimed total after it (atomic units,
	// base 10). Omitted when empty.
	Cumulative string `json:"cumulative,omitempty"`
}

// normalize validates e and rewrites it into its stored form: amounts in
// canonical decimal form, time in UTC truncated to microseconds.
func (e *Entry) normalize() error {
	if e.Tenant == "" {
		return invalidf("entry: tenant is required")
	}
	if len(e.Tenant) > MaxKeyLen {
		return invalidf("entry: tenant longer than %d bytes", MaxKeyLen)
	}
	if e.IdempotencyKey == "" {
		return invalidf("entry %s: idempotency key is required", e.Tenant)
	}
	if len(e.IdempotencyKey) > MaxKeyLen {
		return invalidf("entry %s: idempotency key longer than %d bytes", e.Tenant, MaxKeyLen)
	}
	if !e.Status.Valid() {
		return invalidf("entry %s/%s: status %q is not settled, pending, failed, charged, claimed or swept", e.Tenant, e.IdempotencyKey, e.Status)
	}
	if err := e.normalizeChannel(); err != nil {
		return err
	}
	amount, err := decimal.NewFromString(e.Amount)
	if err != nil || amount.IsNegative() {
		return invalidf("entry %s/%s: amount %q is not a non-negative decimal", e.Tenant, e.IdempotencyKey, e.Amount)
	}
	e.Amount = amount.String()
	if !isDigits(e.AmountAtomic) {
		return invalidf("entry %s/%s: atomic amount %q is not a non-negative integer", e.Tenant, e.IdempotencyKey, e.AmountAtomic)
	}
	e.AmountAtomic = trimZeros(e.AmountAtomic)
	e.Time = e.Time.UTC().Truncate(time.Microsecond)
	return nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func trimZeros(s string) string {
	for len(s) > 1 && s[0] == '0' {
		s = s[1:]
	}
	return s
}

// settlementKind is the audit kind of a settlement with status s.
func settlementKind(s Status) string {
	switch s {
	case StatusPending:
		return KindSettlementPending
	case StatusFailed:
		return KindSettlementFailed
	case StatusCharged:
		return KindSettlementCharged
	case StatusClaimed:
		return KindSettlementClaimed
	case StatusSwept:
		return KindSettlementSwept
	}
	return KindSettlement
}

// IsSettlementKind reports whether kind is one of the kinds written with a
// ledger entry, whose Data is the entry's canonical JSON.
func IsSettlementKind(kind string) bool {
	switch kind {
	case KindSettlement, KindSettlementPending, KindSettlementFailed,
		KindSettlementCharged, KindSettlementClaimed, KindSettlementSwept:
		return true
	}
	return false
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}
