package x402_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/402claw/dispatcher/x402"
	"github.com/stretchr/testify/require"
)

func TestChallengeMatchesRealClientView(t *testing.T) {
	t.Parallel()
	ch, err := x402.NewChallenge(serverRequirement(t), x402.ChallengeOptions{})
	require.NoError(t, err)

	for _, name := range []string{"client-dual.json", "client-legacy-v1-dual.json", "client-v2.json", "client-v1.json"} {
		f := fixtureNamed(t, name)
		if len(f.Challenge.HeaderPaymentRequired) > 0 {
			raw, err := base64.StdEncoding.DecodeString(ch.Header)
			require.NoError(t, err)
			require.JSONEq(t, string(f.Challenge.HeaderPaymentRequired), string(raw), name)
		}
		if name != "client-v2.json" { // that server sent an empty body
			require.JSONEq(t, string(f.Challenge.Body), string(ch.Body), name)
		}
	}

	pr, err := x402.DecodePaymentRequired(ch.Header)
	require.NoError(t, err)
	require.Equal(t, ch.PaymentRequired, *pr)
}

func TestChallengeAcceptedEchoesBack(t *testing.T) {
	t.Parallel()
	// The v2 client copies the challenge's accepts[0] into "accepted": what
	// we advertise is byte-for-byte what the real client echoed.
	req := serverRequirement(t)
	f := fixtureNamed(t, "client-dual.json")
	var decoded struct {
		Accepted json.RawMessage `json:"accepted"`
		Resource json.RawMessage `json:"resource"`
	}
	require.NoError(t, json.Unmarshal(f.ClientSent.Decoded, &decoded))
	b, err := json.Marshal(req.V2())
	require.NoError(t, err)
	require.JSONEq(t, string(decoded.Accepted), string(b))
	b, err = json.Marshal(req.Resource)
	require.NoError(t, err)
	require.JSONEq(t, string(decoded.Resource), string(b))
}

func TestChallengeWrite(t *testing.T) {
	t.Parallel()
	req := serverRequirement(t)
	req.Resource.URL = "http://127.0.0.1/t/demo/rows?a=1&b=<2>"
	ch, err := x402.NewChallenge(req, x402.ChallengeOptions{
		Error:      x402.ReasonInvalidSignature,
		Extensions: x402.Extensions{x402.ExtensionPaymentIdentifier: x402.PaymentIdentifierExtension(false)},
	})
	require.NoError(t, err)

	rec := httptest.NewRecorder()
	rec.Header().Set("X-Request-Id", "keep-me")
	ch.Write(rec)
	require.Equal(t, http.StatusPaymentRequired, rec.Code)
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	require.Equal(t, "keep-me", rec.Header().Get("X-Request-Id"))
	require.Equal(t, ch.Header, rec.Header().Get(x402.HeaderPaymentRequired))
	require.Equal(t, string(ch.Body), rec.Body.String())
	// No HTML escaping: the URL appears as is.
	require.Contains(t, rec.Body.String(), `"resource":"http://127.0.0.1/t/demo/rows?a=1&b=<2>"`)

	var v1 x402.PaymentRequiredV1
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &v1))
	require.Equal(t, 1, v1.X402Version)
	require.Equal(t, x402.ReasonInvalidSignature, v1.Error)
	require.Equal(t, "base-sepolia", v1.Accepts[0].Network)
	require.Equal(t, "10000", v1.Accepts[0].MaxAmountRequired)

	pr, err := x402.DecodePaymentRequired(rec.Header().Get(x402.HeaderPaymentRequired))
	require.NoError(t, err)
	require.Equal(t, x402.ReasonInvalidSignature, pr.Error)
	require.Contains(t, pr.Extensions, x402.ExtensionPaymentIdentifier)
	require.True(t, json.Valid(pr.Extensions[x402.ExtensionPaymentIdentifier]))
}

func TestNewChallengeRefusesInvalidRequirement(t *testing.T) {
	t.Parallel()
	req := serverRequirement(t)
	req.PayTo = "nobody"
	_, err := x402.NewChallenge(req, x402.ChallengeOptions{})
	require.ErrorIs(t, err, x402.ErrInvalidRequirement)
}

func TestNewRequirement(t *testing.T) {
	t.Parallel()
	payTo := "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
	main, err := x402.NewRequirement(x402.RequirementParams{Network: "base", Price: dec("1.5"), PayTo: payTo, Resource: "https://x"})
	require.NoError(t, err)
	require.Equal(t, x402.Requirement{
		Scheme:            "exact",
		Network:           "eip155:8453",
		Amount:            "1500000",
		Asset:             "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
		PayTo:             payTo,
		MaxTimeoutSeconds: 60,
		Extra:             map[string]any{"name": "USD Coin", "version": "2"},
		Resource:          x402.ResourceInfo{URL: "https://x"},
	}, main)

	def, err := x402.NewRequirement(x402.RequirementParams{Price: dec("0.000001"), PayTo: payTo, MaxTimeoutSeconds: 300})
	require.NoError(t, err)
	require.Equal(t, x402.NetworkBaseSepolia, def.Network)
	require.Equal(t, "1", def.Amount)
	require.Equal(t, 300, def.MaxTimeoutSeconds)

	_, err = x402.NewRequirement(x402.RequirementParams{Network: "solana", Price: dec("1"), PayTo: payTo})
	require.ErrorIs(t, err, x402.ErrUnknownNetwork)
	_, err = x402.NewRequirement(x402.RequirementParams{Price: dec("0.0000001"), PayTo: payTo})
	require.ErrorIs(t, err, x402.ErrInvalidPrice)
	_, err = x402.NewRequirement(x402.RequirementParams{Price: dec("-1"), PayTo: payTo})
	require.ErrorIs(t, err, x402.ErrInvalidPrice)
	_, err = x402.NewRequirement(x402.RequirementParams{Price: dec("1"), PayTo: "0x12"})
	require.ErrorIs(t, err, x402.ErrInvalidRequirement)
	_, err = x402.NewRequirement(x402.RequirementParams{Price: dec("1"), PayTo: payTo, MaxTimeoutSeconds: -1})
	require.ErrorIs(t, err, x402.ErrInvalidRequirement)
}

func TestRequestURL(t *testing.T) {
	t.Parallel()
	r := httptest.NewRequest(http.MethodGet, "http://acme.api.402claw.dev:8402/t/demo/rows?limit=5", nil)
	require.Equal(t, "http://acme.api.402claw.dev:8402/t/demo/rows?limit=5", x402.RequestURL(r))
	r = httptest.NewRequest(http.MethodGet, "https://acme.example/x", nil)
	require.Equal(t, "https://acme.example/x", x402.RequestURL(r))
}
