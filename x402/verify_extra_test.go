package x402_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/x402"
)

// A verify answer keeps its extra (a batch-settlement channel's snapshot)
// when it is a JSON object, and drops anything else.
func TestParseVerifyResponseExtra(t *testing.T) {
	r, err := x402.ParseVerifyResponse([]byte(`{"isValid":true,"payer":"0xp","extra":{"channelId":"0xc","balance":"1000","withdrawRequestedAt":0}}`))
	require.NoError(t, err)
	require.True(t, r.IsValid)
	require.Equal(t, map[string]any{"channelId": "0xc", "balance": "1000", "withdrawRequestedAt": float64(0)}, r.Extra)
	for _, body := range []string{
		`{"isValid":true}`,
		`{"isValid":true,"extra":null}`,
		`{"isValid":true,"extra":"text"}`,
		`{"isValid":true,"extra":[1,2]}`,
		`{"isValid":true,"extra":{}}`,
	} {
		r, err := x402.ParseVerifyResponse([]byte(body))
		require.NoError(t, err, body)
		require.Nil(t, r.Extra, body)
	}
}
