package x402

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// HeaderSettlementOverrides is the response header by which a worker
// reports the charge of a usage-priced payment (upto, batch-settlement):
// {"amount": "<atomic units>" | "<p>%" | "$<usd>"}, as the x402 SDKs name
// and format it. The gateway removes it before answering the client.
const HeaderSettlementOverrides = "Settlement-Overrides"

// ErrInvalidSettlementOverrides means a Settlement-Overrides value could
// not be turned into a charge: unparseable, negative, above the maximum,
// or more precise than the asset. It is the worker's error: nothing is
// settled.
var ErrInvalidSettlementOverrides = errors.New("x402: invalid settlement overrides")

// maxOverridesBytes bounds the header value parsed.
const maxOverridesBytes = 1024

// ParseSettlementOverrides turns a Settlement-Overrides header value into
// the charge in atomic units (canonical decimal), given the maximum max
// (the signed amount, atomic units) and the asset's decimals. The amount
// is one of:
//
//   - "<n>": atomic units, an unsigned integer;
//   - "<p>%": a percentage of max with at most two decimals ("12.5%"),
//     the product floored to whole atomic units;
//   - "$<usd>": a dollar amount, at par with the asset, with at most
//     decimals places ("$0.0123" is "12300" for a 6-decimal asset).
//
// The charge may be zero and must not exceed max. Every error wraps
// ErrInvalidSettlementOverrides and says what is wrong.
func ParseSettlementOverrides(value string, max string, decimals int32) (string, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidSettlementOverrides, fmt.Sprintf(format, args...))
	}
	maxN, ok := parseUint256(max)
	if !ok {
		return "", bad("maximum %q is not an unsigned integer", clipOverrides(max))
	}
	if decimals < 0 || decimals > 36 {
		return "", bad("unsupported decimals %d", decimals)
	}
	if len(value) > maxOverridesBytes {
		return "", bad("value is %d bytes, over the %d byte limit", len(value), maxOverridesBytes)
	}
	var body struct {
		Amount json.RawMessage `json:"amount"`
	}
	if err := json.Unmarshal([]byte(value), &body); err != nil {
		return "", bad("not a JSON object: %v", err)
	}
	if len(body.Amount) == 0 || string(body.Amount) == "null" {
		return "", bad("amount is missing")
	}
	var amount string
	if err := json.Unmarshal(body.Amount, &amount); err != nil {
		return "", bad("amount %s is not a string", clipOverrides(string(body.Amount)))
	}
	amount = strings.TrimSpace(amount)
	if strings.HasPrefix(amount, "-") || strings.HasPrefix(amount, "$-") {
		return "", bad("amount %q is negative", clipOverrides(amount))
	}
	var charge *big.Int
	switch {
	case strings.HasSuffix(amount, "%"):
		bp, err := fixedPoint(strings.TrimSuffix(amount, "%"), 2)
		if err != nil {
			return "", bad("percentage %q: %v", clipOverrides(amount), err)
		}
		charge = new(big.Int).Mul(maxN, bp)
		charge.Quo(charge, big.NewInt(100*100))
		if bp.Cmp(big.NewInt(100*100)) > 0 {
			return "", bad("percentage %q is over 100%%", clipOverrides(amount))
		}
	case strings.HasPrefix(amount, "$"):
		n, err := fixedPoint(strings.TrimPrefix(amount, "$"), int(decimals))
		if err != nil {
			return "", bad("dollar amount %q: %v", clipOverrides(amount), err)
		}
		charge = n
	default:
		n, ok := parseUint256(amount)
		if !ok {
			return "", bad("amount %q is neither atomic units, a percentage nor a dollar amount", clipOverrides(amount))
		}
		charge = n
	}
	if charge.Cmp(maxN) > 0 {
		return "", bad("charge %s is over the maximum %s", charge, maxN)
	}
	return charge.String(), nil
}

// fixedPoint parses an unsigned decimal with at most places fractional
// digits and returns it scaled by 10^places.
func fixedPoint(s string, places int) (*big.Int, error) {
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" || (hasDot && frac == "") {
		return nil, errors.New("not a decimal number")
	}
	if len(frac) > places {
		return nil, fmt.Errorf("more than %d decimal places", places)
	}
	digits := whole + frac + strings.Repeat("0", places-len(frac))
	if len(digits) > 90 {
		return nil, errors.New("too large")
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return nil, errors.New("not a decimal number")
		}
	}
	n, ok := new(big.Int).SetString(digits, 10)
	if !ok {
		return nil, errors.New("not a decimal number")
	}
	return n, nil
}

func clipOverrides(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
