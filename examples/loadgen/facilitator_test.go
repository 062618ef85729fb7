package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

func facilitatorBody(t *testing.T) ([]byte, x402.FacilitatorRequest) {
	t.Helper()
	payTo, err := localfacilitator.GenerateSigner()
	require.NoError(t, err)
	req, err := x402.NewRequirement(x402.RequirementParams{
		Price: decimal.RequireFromString("0.01"), PayTo: payTo.Address(),
		Resource: "http://127.0.0.1:1/t/acme/items/1",
	})
	require.NoError(t, err)
	s, err := localfacilitator.GenerateSigner()
	require.NoError(t, err)
	sp, err := s.Sign(req, 2, localfacilitator.SignOptions{})
	require.NoError(t, err)
	p, err := x402.DecodePaymentHeader(sp.Value)
	require.NoError(t, err)
	fr := x402.FacilitatorRequest{Payment: p, Requirement: req}
	body, err := fr.Body()
	require.NoError(t, err)
	return body, fr
}

func post(t *testing.T, h http.Handler, path string, body []byte) (int, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, b
}

func TestFacilitatorRecordsEachSettlementOnce(t *testing.T) {
	t.Parallel()
	f, err := newFaultyFacilitator(facilitatorFaults{}, make(chan struct{}))
	require.NoError(t, err)
	body, fr := facilitatorBody(t)
	code, b := post(t, f, "/verify", body)
	require.Equal(t, 200, code)
	vr, err := x402.ParseVerifyResponse(b)
	require.NoError(t, err)
	require.True(t, vr.IsValid, string(b))

	code, b = post(t, f, "/settle", body)
	require.Equal(t, 200, code)
	sr, err := x402.ParseSettleResponse(b)
	require.NoError(t, err)
	require.True(t, sr.Success, string(b))
	// A second settlement of the same authorization is refused and not
	// recorded.
	code, b = post(t, f, "/settle", body)
	require.Equal(t, 200, code)
	sr2, err := x402.ParseSettleResponse(b)
	require.NoError(t, err)
	require.False(t, sr2.Success)

	got := f.Settles()
	require.Len(t, got, 1)
	require.Equal(t, sr.Transaction, got[0].TxHash)
	require.Equal(t, localfacilitator.TransactionHash(fr), got[0].TxHash)
	require.Equal(t, "acme", got[0].Tenant)
	require.Equal(t, x402.IdempotencyKey(fr.Payment, nil), got[0].Key)
	require.Equal(t, fr.Requirement.Amount, got[0].Amount)
	require.True(t, got[0].Answered)
}

func TestFacilitatorFaults(t *testing.T) {
	t.Parallel()
	stop := make(chan struct{})
	close(stop) // hangs end at once
	for _, tc := range []struct {
		name     string
		faults   facilitatorFaults
		path     string
		code     int
		recorded int
	}{
		{"verify 503", facilitatorFaults{Verify5xx: 1}, "/verify", 503, 0},
		{"settle 503 settles nothing", facilitatorFaults{Settle5xx: 1}, "/settle", 503, 0},
		{"settle success:false settles nothing", facilitatorFaults{SettleFail: 1}, "/settle", 200, 0},
		{"settle timeout settles nothing", facilitatorFaults{Timeout: 1, TimeoutDelay: time.Hour}, "/settle", 504, 0},
		{"settle then timeout", facilitatorFaults{SettledTimeout: 1, TimeoutDelay: time.Hour}, "/settle", 504, 1},
	} {
		f, err := newFaultyFacilitator(tc.faults, stop)
		require.NoError(t, err)
		body, _ := facilitatorBody(t)
		code, b := post(t, f, tc.path, body)
		require.Equal(t, tc.code, code, tc.name)
		if tc.name == "settle success:false settles nothing" {
			sr, err := x402.ParseSettleResponse(b)
			require.NoError(t, err)
			require.False(t, sr.Success)
		}
		require.Len(t, f.Settles(), tc.recorded, tc.name)
		if tc.recorded > 0 {
			require.False(t, f.Settles()[0].Answered)
		}
	}
}
