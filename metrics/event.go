package metrics

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/402claw/dispatcher/dispatch"
	"math"
	"net/netip"
	"strings"
	"time"

	"github.com/shopspring/decimal"
)

// Lifecycle is the final outcome of one request through the gateway: the
// dispatcher's lifecycle, as usage events store it.
type Lifecycle string

// The lifecycles a usage event can have.
const (
	// LifecycleServed is a free request answered by the tenant's worker.
	LifecycleServed = Lifecycle(dispatch.LifecycleServed)
	// LifecyclePaymentSettled is a paid request whose payment settled.
	LifecyclePaymentSettled = Lifecycle(dispatch.LifecyclePaymentSettled)
	// LifecyclePaymentReplayed is an idempotent replay of a stored paid
	// response: no worker call and no second settlement.
	LifecyclePaymentReplayed = Lifecycle(dispatch.LifecyclePaymentReplayed)
	// LifecyclePaymentChallenged is a 402 challenge (no payment sent yet).
	LifecyclePaymentChallenged = Lifecycle(dispatch.LifecyclePaymentChallenged)
	// LifecyclePaymentInvalid is a payment that could not be decoded or
	// failed verification.
	LifecyclePaymentInvalid = Lifecycle(dispatch.LifecyclePaymentInvalid)
	// LifecyclePaymentSettlementFailed is a paid request whose worker ran
	// but whose settlement failed (the client is not charged).
	LifecyclePaymentSettlementFailed = Lifecycle(dispatch.LifecyclePaymentSettlementFailed)
	// LifecycleRateLimited is a request refused by a rate limit.
	LifecycleRateLimited = Lifecycle(dispatch.LifecycleRateLimited)
	// LifecycleUsageQuotaExceeded is a request refused by a usage quota.
	LifecycleUsageQuotaExceeded = Lifecycle(dispatch.LifecycleUsageQuotaExceeded)
	// LifecycleSpendCapExceeded is a request refused by a spend cap.
	LifecycleSpendCapExceeded = Lifecycle(dispatch.LifecycleSpendCapExceeded)
	// LifecycleWorkerError is a request whose worker was missing, over its
	// limits, failed or timed out.
	LifecycleWorkerError = Lifecycle(dispatch.LifecycleWorkerError)
)

// lifecycleInfo says how each lifecycle is counted.
//
// A request is countable when it reached the tenant's worker: only those
// say something about the API's popularity and quality. Challenges, invalid
// payments and refusals by the gateway's own limits are not calls; replays
// are not either, since one payment could otherwise inflate an API's call
// count for free. Only a settled payment is billable.
var lifecycleInfo = map[Lifecycle]struct {
	countable, billable, failure bool
	status                       int
}{
	LifecycleServed:                  {countable: true, status: 200},
	LifecyclePaymentSettled:          {countable: true, billable: true, status: 200},
	LifecyclePaymentReplayed:         {status: 200},
	LifecyclePaymentChallenged:       {status: 402},
	LifecyclePaymentInvalid:          {status: 402},
	LifecyclePaymentSettlementFailed: {countable: true, failure: true, status: 402},
	LifecycleRateLimited:             {status: 429},
	LifecycleUsageQuotaExceeded:      {status: 429},
	LifecycleSpendCapExceeded:        {status: 429},
	LifecycleWorkerError:             {countable: true, failure: true, status: 502},
}

// Valid reports whether l is one of the known lifecycles.
func (l Lifecycle) Valid() bool {
	_, ok := lifecycleInfo[l]
	return ok
}

// Countable reports whether a request with this lifecycle counts as a call
// in analytics: it reached the tenant's worker.
func (l Lifecycle) Countable() bool { return lifecycleInfo[l].countable }

// Billable reports whether a request with this lifecycle was charged.
func (l Lifecycle) Billable() bool { return lifecycleInfo[l].billable }

// DefaultStatus is the HTTP status the gateway answers with for this
// lifecycle, used when an event carries none.
func (l Lifecycle) DefaultStatus() int { return lifecycleInfo[l].status }

// Directory used for events and APIs that name none.
const DefaultDirectory = "uncategorized"

// MaxUSDDecimals is the number of decimal places USD amounts may have: one
// micro-USD is the smallest amount.
const MaxUSDDecimals = 6

// AnonymousCaller is the caller id of requests with no identity at all.
var AnonymousCaller = HashCaller("anonymous")

// HashCaller turns a raw caller identity (an agent id, an API key, an IP, a
// payer address) into the id stored in usage events: "c_" followed by the
// first 32 hex digits (128 bits) of its SHA-256. Raw identities, API keys
// above all, are never stored. The hash is unkeyed so that several gateway
// replicas agree on it; callers that worry about guessable identities (IP
// addresses) may hash a secret-prefixed string instead.
func HashCaller(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return "c_" + hex.EncodeToString(sum[:16])
}

// HashPayer turns a verified payer address into the Payer of a usage
// event: the same id the payment stage gives the caller of a paid request,
// HashCaller("payer:" + the lower-cased address). An empty address gives "".
func HashPayer(address string) string {
	address = strings.TrimSpace(address)
	if address == "" {
		return ""
	}
	return HashCaller("payer:" + strings.ToLower(address))
}

// Client network prefixes: a caller can rotate asserted ids for free, and
// addresses within its own /24 (IPv4) or /48 (IPv6, a typical site
// allocation) cheaply, but not networks.
const (
	ClientNetBitsIPv4 = 24
	ClientNetBitsIPv6 = 48
)

// HashClientNet returns the ClientNet of a usage event for a client
// address: "n_" and the first 32 hex digits of the SHA-256 of the address's
// network prefix (/24 for IPv4, IPv4-mapped IPv6 included; /48 for IPv6;
// zones ignored). An invalid address (no client address known) gives the
// hash of "unknown", one network for every such client, so a missing
// address never adds diversity. The hash is unkeyed so that replicas agree.
func HashClientNet(ip netip.Addr) string {
	prefix := "unknown"
	if ip.IsValid() {
		ip = ip.Unmap().WithZone("")
		bits := ClientNetBitsIPv6
		if ip.Is4() {
			bits = ClientNetBitsIPv4
		}
		p, _ := ip.Prefix(bits) // bits fits the family: no error
		prefix = p.String()
	}
	sum := sha256.Sum256([]byte("net:" + prefix))
	return "n_" + hex.EncodeToString(sum[:16])
}

// UsageEvent records the final outcome of one request. Its JSON form is the
// wire form of GET /__platform/events; amounts are exact decimal strings.
type UsageEvent struct {
	// Time is when the request finished, in UTC with microsecond precision
	// once normalized.
	Time time.Time
	// RequestID is the gateway's request id; stores de-duplicate on it.
	RequestID string
	// APIID is the tenant slug.
	APIID string
	// Endpoint is the request path the tenant saw (without /t/<slug>).
	Endpoint string
	// Owner is the tenant owner's user id.
	Owner string
	// Directory is the tenant's marketplace category.
	Directory string
	// CallerID is the hashed caller identity (see HashCaller): the
	// verified payer for paid calls, otherwise the asserted or derived
	// identity (X-Agent-Id, ...), which a caller can rotate at will.
	CallerID string
	// ClientNet is the hashed network prefix of the client's address (see
	// HashClientNet); empty when the producer does not know it.
	ClientNet string
	// Payer is the hashed verified payer address (see HashPayer); empty for
	// unpaid calls.
	Payer string
	// Status is the HTTP status sent to the client.
	Status int
	// LatencyMs is the time the gateway spent on the request.
	LatencyMs int64
	// PriceUSD is the tenant's price for the request.
	PriceUSD decimal.Decimal
	// BilledUSD is what was actually charged: PriceUSD when billable,
	// zero otherwise.
	BilledUSD decimal.Decimal
	// Lifecycle is the outcome.
	Lifecycle Lifecycle
	// Billable and Countable are derived from Lifecycle.
	Billable  bool
	Countable bool
}

type usageEventJSON struct {
	Time      time.Time       `json:"time"`
	RequestID string          `json:"requestId"`
	APIID     string          `json:"apiId"`
	Endpoint  string          `json:"endpoint"`
	Owner     string          `json:"owner"`
	Directory string          `json:"directory"`
	CallerID  string          `json:"callerId"`
	ClientNet string          `json:"clientNet"`
	Payer     string          `json:"payer"`
	Status    int             `json:"status"`
	LatencyMs int64           `json:"latencyMs"`
	PriceUSD  decimal.Decimal `json:"priceUsd"`
	BilledUSD decimal.Decimal `json:"billedUsd"`
	Lifecycle Lifecycle       `json:"lifecycle"`
	Billable  bool            `json:"billable"`
	Countable bool            `json:"countable"`
}

// MarshalJSON encodes the event with the wire field names and amounts as
// decimal strings, whatever decimal.MarshalJSONWithoutQuotes says.
func (e UsageEvent) MarshalJSON() ([]byte, error) {
	type wire struct {
		usageEventJSON
		PriceUSD  string `json:"priceUsd"`
		BilledUSD string `json:"billedUsd"`
	}
	return json.Marshal(wire{
		usageEventJSON: usageEventJSON(e),
		PriceUSD:       e.PriceUSD.String(),
		BilledUSD:      e.BilledUSD.String(),
	})
}

// UnmarshalJSON decodes the wire form; amounts may be strings or numbers.
func (e *UsageEvent) UnmarshalJSON(b []byte) error {
	var w usageEventJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*e = UsageEvent(w)
	return nil
}

// Sentinel errors. Stores return them wrapped; test with errors.Is.
var (
	// ErrInvalidEvent is returned by NormalizeUsageEvent and Store.Append
	// for an event that fails validation.
	ErrInvalidEvent = errors.New("metrics: invalid usage event")
	// ErrInvalidQuery is returned for a bad limit, window or time range.
	ErrInvalidQuery = errors.New("metrics: invalid query")
)

// Limits on field sizes, so one bad producer cannot bloat the stores.
const (
	maxIDLen       = 128
	maxEndpointLen = 512
	maxLatencyMs   = 24 * 60 * 60 * 1000
)

// NormalizeUsageEvent returns e with defaults filled in and derivations
// applied, or an error wrapping ErrInvalidEvent. Every Store calls it on
// Append, so what a store returns is always normalized:
//
//   - Time is required; it is converted to UTC and truncated to the
//     microsecond (what every SQL backend keeps).
//   - RequestID and APIID are required; string fields are trimmed; an empty
//     Endpoint becomes "/", an empty Directory DefaultDirectory, an empty
//     CallerID AnonymousCaller.
//   - Lifecycle must be known; Countable and Billable are always derived
//     from it, and a zero Status becomes its DefaultStatus.
//   - Status must be 100..599, LatencyMs 0..24h.
//   - Amounts must be non-negative with at most 6 decimals. BilledUSD
//     defaults to PriceUSD on a billable event and is zero otherwise.
func NormalizeUsageEvent(e UsageEvent) (UsageEvent, error) {
	bad := func(format string, args ...any) (UsageEvent, error) {
		return UsageEvent{}, fmt.Errorf("%w: request %q: %s", ErrInvalidEvent, e.RequestID, fmt.Sprintf(format, args...))
	}
	if e.Time.IsZero() {
		return bad("time is required")
	}
	e.Time = e.Time.UTC().Truncate(time.Microsecond)
	e.RequestID = strings.TrimSpace(e.RequestID)
	e.APIID = strings.TrimSpace(e.APIID)
	e.Endpoint = strings.TrimSpace(e.Endpoint)
	e.Owner = strings.TrimSpace(e.Owner)
	e.Directory = strings.TrimSpace(e.Directory)
	e.CallerID = strings.TrimSpace(e.CallerID)
	e.ClientNet = strings.TrimSpace(e.ClientNet)
	e.Payer = strings.TrimSpace(e.Payer)
	switch {
	case e.RequestID == "":
		return bad("requestId is required")
	case e.APIID == "":
		return bad("apiId is required")
	case len(e.RequestID) > maxIDLen || len(e.APIID) > maxIDLen || len(e.Owner) > maxIDLen ||
		len(e.Directory) > maxIDLen || len(e.CallerID) > maxIDLen || len(e.ClientNet) > maxIDLen ||
		len(e.Payer) > maxIDLen:
		return bad("an id is longer than %d bytes", maxIDLen)
	case len(e.Endpoint) > maxEndpointLen:
		return bad("endpoint is longer than %d bytes", maxEndpointLen)
	}
	if e.Endpoint == "" {
		e.Endpoint = "/"
	}
	if e.Directory == "" {
		e.Directory = DefaultDirectory
	}
	if e.CallerID == "" {
		e.CallerID = AnonymousCaller
	}
	info, ok := lifecycleInfo[e.Lifecycle]
	if !ok {
		return bad("unknown lifecycle %q", e.Lifecycle)
	}
	e.Countable, e.Billable = info.countable, info.billable
	if e.Status == 0 {
		e.Status = info.status
	}
	if e.Status < 100 || e.Status > 599 {
		return bad("status %d out of range", e.Status)
	}
	if e.LatencyMs < 0 || e.LatencyMs > maxLatencyMs {
		return bad("latencyMs %d out of range", e.LatencyMs)
	}
	if _, err := USDToMicros(e.PriceUSD); err != nil {
		return bad("priceUsd: %v", err)
	}
	if !e.Billable {
		e.BilledUSD = decimal.Zero
	} else if e.BilledUSD.IsZero() {
		e.BilledUSD = e.PriceUSD
	}
	if _, err := USDToMicros(e.BilledUSD); err != nil {
		return bad("billedUsd: %v", err)
	}
	return e, nil
}

// Source returns the identity caller diversity is measured on, one that a
// caller cannot mint for free: the verified Payer of a billable (settled)
// call; otherwise the client's network (ClientNet), so that any number of
// asserted ids from one network count as one source; and only when the
// producer recorded neither, the CallerID (events from before these fields
// existed).
func (e *UsageEvent) Source() string {
	switch {
	case e.Billable && e.Payer != "":
		return e.Payer
	case e.ClientNet != "":
		return e.ClientNet
	}
	return e.CallerID
}

// IsFailure reports whether a countable event counts as an error against the
// API: a worker error, a failed settlement, or any 5xx status. A 4xx answer
// from the worker is the client's mistake and is not counted.
func (e UsageEvent) IsFailure() bool {
	return e.Countable && (lifecycleInfo[e.Lifecycle].failure || e.Status >= 500)
}

// USDToMicros converts a non-negative USD amount with at most six decimals
// into integer micro-USD.
func USDToMicros(d decimal.Decimal) (int64, error) {
	if d.IsNegative() {
		return 0, fmt.Errorf("amount %s is negative", d)
	}
	// Fast path without big-number arithmetic: prices have few digits.
	if exp := d.Exponent(); exp >= -MaxUSDDecimals && exp <= 0 && d.NumDigits() <= 12 {
		m := d.CoefficientInt64()
		for range exp + MaxUSDDecimals {
			m *= 10
		}
		return m, nil
	}
	m := d.Shift(MaxUSDDecimals)
	if !m.IsInteger() {
		return 0, fmt.Errorf("amount %s has more than %d decimals", d, MaxUSDDecimals)
	}
	if m.GreaterThan(decimal.NewFromInt(math.MaxInt64 / 1024)) {
		return 0, fmt.Errorf("amount %s is too large", d)
	}
	return m.IntPart(), nil
}

// MicrosToUSD formats integer micro-USD as an exact decimal string, without
// trailing zeros ("1.5", "0.000001", "0").
func MicrosToUSD(micros int64) string {
	return decimal.New(micros, -MaxUSDDecimals).String()
}
