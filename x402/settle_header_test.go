package x402_test

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/402claw/dispatcher/x402"
	"github.com/stretchr/testify/require"
)

func TestSettlementHeaderMatchesClientView(t *testing.T) {
	t.Parallel()
	tx := "0x" + strings.Repeat("ab", 32)
	for _, f := range loadFixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			t.Parallel()
			p, err := x402.DecodePaymentHeader(f.ClientSent.HeaderValue)
			require.NoError(t, err)
			// The facilitator answered in CAIP-2 without a payer; the header
			// is respelled for the payment's version.
			name, value, err := x402.SettlementHeader(p, &x402.SettleResponse{
				Success: true, Transaction: tx, Network: "eip155:84532",
			})
			require.NoError(t, err)
			require.Equal(t, p.ResponseHeader(), name)

			raw, err := base64.StdEncoding.DecodeString(value)
			require.NoError(t, err)
			require.JSONEq(t, string(f.ClientDecodedSettleResponse), string(raw))

			back, err := x402.DecodeSettleResponse(value)
			require.NoError(t, err)
			var want x402.SettleResponse
			require.NoError(t, json.Unmarshal(f.ClientDecodedSettleResponse, &want))
			require.Equal(t, &want, back)
		})
	}
}

func TestSettleResponseRoundTrip(t *testing.T) {
	t.Parallel()
	failed := &x402.SettleResponse{Success: false, ErrorReason: "insufficient_funds", Network: "base", Payer: "0xabc"}
	v, err := x402.EncodeSettleResponse(failed)
	require.NoError(t, err)
	raw, err := base64.StdEncoding.DecodeString(v)
	require.NoError(t, err)
	// transaction is present (empty) on failure, as the spec requires.
	require.JSONEq(t, `{"success":false,"errorReason":"insufficient_funds","payer":"0xabc","transaction":"","network":"base"}`, string(raw))

	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		got, err := x402.DecodeSettleResponse(enc.EncodeToString(raw))
		require.NoError(t, err)
		require.Equal(t, failed, got)
	}

	for _, bad := range []string{"", "***", base64.StdEncoding.EncodeToString([]byte(`{"transaction":"0x"}`)), strings.Repeat("A", x402.MaxHeaderBytes+1)} {
		_, err := x402.DecodeSettleResponse(bad)
		require.ErrorIs(t, err, x402.ErrInvalidSettleResponse, bad)
	}
	_, err = x402.EncodeSettleResponse(nil)
	require.ErrorIs(t, err, x402.ErrInvalidSettleResponse)
	_, _, err = x402.SettlementHeader(nil, failed)
	require.ErrorIs(t, err, x402.ErrInvalidSettleResponse)
}

func TestSettleOutcomeStrings(t *testing.T) {
	t.Parallel()
	require.Equal(t, "settled", x402.SettleSucceeded.String())
	require.Equal(t, "pending", x402.SettlePending.String())
	require.Equal(t, "failed", x402.SettleFailed.String())
	var nilResp *x402.SettleResponse
	require.Equal(t, x402.SettleFailed, nilResp.Outcome())
	require.False(t, nilResp.Pending())
}
