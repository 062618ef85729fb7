package x402

import (
	"fmt"
	"math/big"

	"github.com/shopspring/decimal"
)

// maxUint256 bounds every on-chain integer (value, timestamps).
var maxUint256 = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1))

// ToAtomicUnits converts an exact decimal price into the asset's atomic
// units, as a decimal string: 0.01 with 6 decimals is "10000". The price must
// be positive and have at most decimals fractional digits (trailing zeros do
// not count); anything else wraps ErrInvalidPrice. Rounding never happens,
// so the amount a client signs is exactly the configured price.
func ToAtomicUnits(price decimal.Decimal, decimals int32) (string, error) {
	if decimals < 0 || decimals > 36 {
		return "", fmt.Errorf("%w: unsupported decimals %d", ErrInvalidPrice, decimals)
	}
	if price.Sign() <= 0 {
		return "", fmt.Errorf("%w: price %s is not positive", ErrInvalidPrice, price.String())
	}
	scaled := price.Shift(decimals)
	if !scaled.IsInteger() {
		return "", fmt.Errorf("%w: price %s has more than %d decimal places", ErrInvalidPrice, price.String(), decimals)
	}
	atomic := scaled.BigInt()
	if atomic.Cmp(maxUint256) > 0 {
		return "", fmt.Errorf("%w: price %s is too large", ErrInvalidPrice, price.String())
	}
	return atomic.String(), nil
}

// FromAtomicUnits converts an atomic amount back to a decimal in whole
// token units ("10000" with 6 decimals is 0.01). It wraps ErrInvalidPrice
// when amount is not a non-negative decimal integer.
func FromAtomicUnits(amount string, decimals int32) (decimal.Decimal, error) {
	n, ok := parseUint256(amount)
	if !ok {
		return decimal.Decimal{}, fmt.Errorf("%w: amount %q is not an unsigned integer", ErrInvalidPrice, amount)
	}
	return decimal.NewFromBigInt(n, -decimals), nil
}

// parseUint256 parses a canonical-or-zero-padded decimal string of at most
// 78 digits into a value below 2^256.
func parseUint256(s string) (*big.Int, bool) {
	if s == "" || len(s) > 78 {
		return nil, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return nil, false
		}
	}
	n, ok := new(big.Int).SetString(s, 10)
	if !ok || n.Cmp(maxUint256) > 0 {
		return nil, false
	}
	return n, true
}

// canonicalUint returns the canonical decimal form of an unsigned integer
// string (leading zeros stripped), or false.
func canonicalUint(s string) (string, bool) {
	n, ok := parseUint256(s)
	if !ok {
		return "", false
	}
	return n.String(), true
}
