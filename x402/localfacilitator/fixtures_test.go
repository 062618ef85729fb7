package localfacilitator_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/stretchr/testify/require"
)

// fixture is one recorded real-client exchange from testdata/.
type fixture struct {
	Name         string
	Mode         string `json:"mode"`
	SignedAtUnix int64  `json:"signedAtUnix"`
	PrivateKey   string `json:"privateKey"`
	Payer        string `json:"payer"`
	Challenge    struct {
		HeaderPaymentRequired *x402.PaymentRequired  `json:"headerPAYMENT_REQUIRED"`
		Body                  x402.PaymentRequiredV1 `json:"body"`
	} `json:"challenge"`
	ClientSent struct {
		Header         string          `json:"header"`
		HeaderValue    string          `json:"headerValue"`
		Decoded        json.RawMessage `json:"decoded"`
		EIP712Digest   string          `json:"eip712Digest"`
		SignatureValid bool            `json:"signatureValid"`
	} `json:"clientSent"`
	ClientDecodedSettleResponse x402.SettleResponse `json:"clientDecodedSettleResponse"`
}

func (f fixture) signedAt() time.Time { return time.Unix(f.SignedAtUnix, 0) }

// requirement is the server requirement the client paid against: the v2
// header's when the client sent PAYMENT-SIGNATURE, otherwise the v1 body's.
func (f fixture) requirement() x402.Requirement {
	if f.ClientSent.Header == x402.HeaderPaymentSignature {
		pr := f.Challenge.HeaderPaymentRequired
		return x402.RequirementFromV2(pr.Accepts[0], pr.Resource)
	}
	return x402.RequirementFromV1(f.Challenge.Body.Accepts[0])
}

func loadFixtures(t testing.TB) []fixture {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	require.NoError(t, err)
	require.Len(t, paths, 4)
	var out []fixture
	for _, p := range paths {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		var f fixture
		require.NoError(t, json.Unmarshal(b, &f))
		f.Name = filepath.Base(p)
		out = append(out, f)
	}
	return out
}
