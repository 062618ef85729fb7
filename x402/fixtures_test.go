package x402_test

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/402claw/dispatcher/x402"
	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"
)

// fixture is one recorded real-client exchange from testdata/.
type fixture struct {
	Name         string
	Mode         string `json:"mode"`
	SignedAtUnix int64  `json:"signedAtUnix"`
	Payer        string `json:"payer"`
	Challenge    struct {
		HeaderPaymentRequired json.RawMessage `json:"headerPAYMENT_REQUIRED"`
		Body                  json.RawMessage `json:"body"`
	} `json:"challenge"`
	ClientSent struct {
		Header      string          `json:"header"`
		HeaderValue string          `json:"headerValue"`
		Decoded     json.RawMessage `json:"decoded"`
	} `json:"clientSent"`
	ClientDecodedSettleResponse json.RawMessage `json:"clientDecodedSettleResponse"`
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

func fixtureNamed(t testing.TB, name string) fixture {
	t.Helper()
	for _, f := range loadFixtures(t) {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("no fixture %s", name)
	return fixture{}
}

// serverRequirement is what the fixtures' server asked for.
func serverRequirement(t testing.TB) x402.Requirement {
	t.Helper()
	req, err := x402.NewRequirement(x402.RequirementParams{
		Network:     "eip155:84532",
		Price:       decimal.RequireFromString("0.01"),
		PayTo:       "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
		Resource:    "http://127.0.0.1/t/demo/rows",
		Description: "demo rows",
		MimeType:    "application/json",
	})
	require.NoError(t, err)
	return req
}

// editPayment decodes a header value's JSON into a generic map, lets edit
// change it, and re-encodes it with standard base64.
func editPayment(t testing.TB, headerValue string, edit func(m map[string]any)) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(headerValue)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	edit(m)
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return base64.StdEncoding.EncodeToString(b)
}

func authOf(m map[string]any) map[string]any {
	return m["payload"].(map[string]any)["authorization"].(map[string]any)
}
