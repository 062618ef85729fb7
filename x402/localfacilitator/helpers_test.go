package localfacilitator_test

import (
	"net/http"
	"strconv"
	"testing"

	"github.com/402claw/dispatcher/x402"
	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"
)

const testPayTo = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"

func mustDecimal(s string) decimal.Decimal { return decimal.RequireFromString(s) }

func mustInt(t testing.TB, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	require.NoError(t, err)
	return n
}

func canonical(name string) string { return http.CanonicalHeaderKey(name) }

func mustRequirement(t testing.TB) x402.Requirement {
	t.Helper()
	req, err := x402.NewRequirement(x402.RequirementParams{
		Price:       mustDecimal("0.01"),
		PayTo:       testPayTo,
		Resource:    "http://127.0.0.1/t/demo/rows",
		Description: "demo rows",
		MimeType:    "application/json",
	})
	require.NoError(t, err)
	return req
}
