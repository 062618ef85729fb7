package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/permit2"
	"github.com/402claw/dispatcher/x402/upto"
	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"
)

// fakeServer offers one entry per scheme and settles what it is paid with
// through the local facilitator, charging 1858 for upto.
func fakeServer(t *testing.T) *httptest.Server {
	t.Helper()
	fac, err := localfacilitator.New(localfacilitator.Config{})
	require.NoError(t, err)
	offer := x402.Offer{Price: decimal.RequireFromString("0.01"), MaxPrice: decimal.RequireFromString("0.05"),
		PayTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"}
	up, err := upto.New(upto.Config{FacilitatorAddress: fac.Address()})
	require.NoError(t, err)
	var accepts []x402.Requirement
	exact, err := x402.NewRequirement(x402.RequirementParams{Price: offer.Price, PayTo: offer.PayTo})
	require.NoError(t, err)
	accepts = append(accepts, exact)
	for _, s := range []x402.Scheme{permit2.New(), up} {
		r, err := s.Requirement(offer)
		require.NoError(t, err)
		accepts = append(accepts, r)
	}
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := r.Header.Get(x402.HeaderPaymentSignature)
		if v == "" {
			pr := x402.PaymentRequired{X402Version: 2}
			for _, a := range accepts {
				pr.Accepts = append(pr.Accepts, a.V2())
			}
			b, _ := json.Marshal(pr)
			w.Header().Set(x402.HeaderPaymentRequired, base64.StdEncoding.EncodeToString(b))
			w.WriteHeader(http.StatusPaymentRequired)
			return
		}
		p, err := localfacilitator.DecodePayment(v)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		var req x402.Requirement
		for _, a := range accepts {
			if a.Scheme == p.Accepted.Scheme && a.ExtraString("assetTransferMethod") == p.Accepted.ExtraString("assetTransferMethod") {
				req = a
			}
		}
		fr := x402.FacilitatorRequest{Payment: p, Requirement: req}
		vr, err := fac.Verify(r.Context(), fr)
		if err != nil || !vr.IsValid {
			http.Error(w, "invalid: "+vr.InvalidReason, 402)
			return
		}
		if req.Scheme == upto.Name {
			fr.Requirement.Amount = "1858"
		}
		sr, err := fac.Settle(r.Context(), fr)
		if err != nil || !sr.Success {
			http.Error(w, "settle failed", 402)
			return
		}
		b, _ := json.Marshal(sr)
		w.Header().Set(x402.HeaderPaymentResponse, base64.StdEncoding.EncodeToString(b))
		_, _ = w.Write([]byte(`{"rows":[]}`))
	}))
}

func TestPayEachScheme(t *testing.T) {
	t.Parallel()
	srv := fakeServer(t)
	defer srv.Close()
	for scheme, want := range map[string]string{
		"exact":         "402 (exact): pay 10000 atomic units",
		"exact-permit2": "402 (exact-permit2): pay 10000 atomic units",
		"upto":          "402 (upto): authorize up to 50000 atomic units",
	} {
		var out bytes.Buffer
		require.NoError(t, run(srv.URL, testKey, scheme, false, false, "", &out), out.String())
		require.Contains(t, out.String(), want)
		require.Contains(t, out.String(), "PAYMENT-RESPONSE: success=true")
		if scheme == "upto" {
			require.Contains(t, out.String(), "amount=1858")
		}
	}
}

func TestPayRefusesBadSchemes(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	err := run("http://127.0.0.1:1", testKey, "batch", false, false, "", &out)
	require.ErrorContains(t, err, "want exact, exact-permit2 or upto")
	err = run("http://127.0.0.1:1", testKey, "upto", true, false, "", &out)
	require.ErrorContains(t, err, "version 2")
	_, err = pick([]x402.Requirement{{Scheme: "exact"}}, "upto")
	require.ErrorContains(t, err, "offers: exact")
	require.Equal(t, " amount=5", chargedAmount(base64.StdEncoding.EncodeToString([]byte(`{"amount":"5"}`))))
	require.Empty(t, chargedAmount("!!"))
}
