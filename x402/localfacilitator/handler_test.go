package localfacilitator_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/402claw/dispatcher/x402"
	"github.com/stretchr/testify/require"
)

func TestHandlerWithFacilitatorClient(t *testing.T) {
	t.Parallel()
	for _, f := range loadFixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			fac := newFacilitator(t, f.signedAt(), nil)
			srv := httptest.NewServer(fac.Handler())
			defer srv.Close()
			client, err := x402.NewFacilitatorClient(srv.URL, x402.FacilitatorConfig{})
			require.NoError(t, err)

			req := request(t, f)
			vr, err := client.Verify(ctx, req)
			require.NoError(t, err)
			require.True(t, vr.IsValid, vr.InvalidReason)
			require.Equal(t, f.Payer, vr.Payer)

			sr, err := client.Settle(ctx, req)
			require.NoError(t, err)
			require.True(t, sr.Success, sr.ErrorReason)
			require.Regexp(t, txHashRE, sr.Transaction)
			require.Equal(t, f.ClientDecodedSettleResponse.Network, sr.Network)

			sr, err = client.Settle(ctx, req)
			require.NoError(t, err)
			require.False(t, sr.Success)
			require.Equal(t, x402.ReasonNonceUsed, sr.ErrorReason)

			sup, err := client.Supported(ctx)
			require.NoError(t, err)
			require.Len(t, sup.Kinds, 8) // exact v2, exact v1, upto, batch-settlement on two networks
			require.Contains(t, sup.Kinds, x402.SupportedKind{X402Version: 1, Scheme: "exact", Network: "base-sepolia"})
		})
	}
}

func TestHandlerRefusesMalformedRequests(t *testing.T) {
	t.Parallel()
	fac := newFacilitator(t, loadFixtures(t)[0].signedAt(), nil)
	srv := httptest.NewServer(fac.Handler())
	defer srv.Close()

	v2 := request(t, loadFixtures(t)[0])
	good, err := v2.Body()
	require.NoError(t, err)
	noReq := strings.Replace(string(good), `"paymentRequirements":{`, `"paymentRequirements":null,"x":{`, 1)

	cases := []struct {
		name, path, body string
		status           int
		want             string
	}{
		{"junk verify", "/verify", "not json", 400, `{"isValid":false,"invalidReason":"invalid_payload"}`},
		{"junk settle", "/settle", "{", 400, `{"success":false,"errorReason":"invalid_payload","transaction":"","network":""}`},
		{"no requirements", "/verify", noReq, 400, `{"isValid":false,"invalidReason":"invalid_payment_requirements"}`},
		{"version disagrees", "/verify", strings.Replace(string(good), `{"x402Version":2,"paymentPayload"`, `{"x402Version":1,"paymentPayload"`, 1), 400, `{"isValid":false,"invalidReason":"invalid_payload"}`},
		{"too large", "/settle", `{"x":"` + strings.Repeat("a", x402.MaxRequestBodyBytes) + `"}`, 400, `{"success":false,"errorReason":"invalid_payload","transaction":"","network":""}`},
	}
	for _, tc := range cases {
		resp, err := http.Post(srv.URL+tc.path, "application/json", strings.NewReader(tc.body))
		require.NoError(t, err, tc.name)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, tc.status, resp.StatusCode, tc.name)
		require.JSONEq(t, tc.want, string(b), tc.name)
	}

	resp, err := http.Get(srv.URL + "/verify")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	resp, err = http.Get(srv.URL + "/nope")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
}

func TestHandlerStoreFailureIsUnavailableToClient(t *testing.T) {
	t.Parallel()
	f := loadFixtures(t)[0]
	store := newFakeKV()
	store.fail = io.ErrUnexpectedEOF
	srv := httptest.NewServer(newFacilitator(t, f.signedAt(), store).Handler())
	defer srv.Close()
	client, err := x402.NewFacilitatorClient(srv.URL, x402.FacilitatorConfig{})
	require.NoError(t, err)
	_, err = client.Verify(context.Background(), request(t, f))
	require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable)
	_, err = client.Settle(context.Background(), request(t, f))
	require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable)
}
