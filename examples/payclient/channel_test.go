package main

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

// channelServer serves batch-settlement payments through channel.Service
// and the local facilitator's escrow, charging 600 per request. After the
// second paid request it spends once more on the channel itself (another
// device of the same payer), so the client's next voucher is stale and it
// must recover from the corrective 402.
func channelServer(t *testing.T) (*httptest.Server, *channel.Service) {
	t.Helper()
	fac, err := localfacilitator.New(localfacilitator.Config{})
	require.NoError(t, err)
	sc, err := channel.NewScheme(channel.SchemeConfig{ReceiverAuthorizer: fac.Address()})
	require.NoError(t, err)
	svc, err := channel.New(memory.NewKV(), channel.Config{Scheme: sc, Facilitator: fac})
	require.NoError(t, err)
	req, err := svc.Scheme().Requirement(x402.Offer{Price: decimal.RequireFromString("0.001"), PayTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"})
	require.NoError(t, err)
	kb, _ := hex.DecodeString(strings.TrimPrefix(testKey, "0x"))
	other := channel.NewClient(secp256k1.PrivKeyFromBytes(kb))
	var mu sync.Mutex
	paid := 0
	challenge := func(w http.ResponseWriter, r x402.Requirement, msg string) {
		c, err := x402.NewChallengeAll([]x402.Requirement{r}, x402.ChallengeOptions{Error: msg})
		require.NoError(t, err)
		w.Header().Set(x402.HeaderPaymentRequired, c.Header)
		w.WriteHeader(http.StatusPaymentRequired)
	}
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := r.Header.Get(x402.HeaderPaymentSignature)
		if v == "" {
			challenge(w, req, "")
			return
		}
		p, err := x402.DecodePaymentHeader(v)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		var sr *x402.SettleResponse
		if channel.IsRefund(p) {
			if sr, err = svc.Refund(r.Context(), p, req); err != nil {
				http.Error(w, err.Error(), 402)
				return
			}
		} else {
			h, err := svc.Begin(r.Context(), p, req)
			var me *channel.MismatchError
			if errors.As(err, &me) {
				challenge(w, me.Corrective(req), me.Reason)
				return
			}
			if err != nil {
				http.Error(w, err.Error(), 402)
				return
			}
			if sr, err = h.Commit(r.Context(), "600"); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			mu.Lock()
			paid++
			n := paid
			mu.Unlock()
			if n == 2 {
				pl, _ := channel.DecodePayload(p.Payload)
				st := h.State()
				vp, err := other.VoucherPayload(req, pl.ChannelConfig, st.Charged+1000)
				require.NoError(t, err)
				op, err := channel.Envelope(req, vp)
				require.NoError(t, err)
				oh, err := svc.Begin(r.Context(), op, req)
				require.NoError(t, err)
				_, err = oh.Commit(r.Context(), "300")
				require.NoError(t, err)
			}
		}
		hv, err := x402.EncodeSettleResponse(sr)
		require.NoError(t, err)
		w.Header().Set(x402.HeaderPaymentResponse, hv)
		_, _ = w.Write([]byte(`{"rows":[]}`))
	})), svc
}

func TestPayWithChannel(t *testing.T) {
	t.Parallel()
	srv, _ := channelServer(t)
	defer srv.Close()
	var out bytes.Buffer
	require.NoError(t, run(srv.URL, testKey, "batch-settlement", false, false, "", &out), out.String())
	s := out.String()
	require.Contains(t, s, "402 (batch-settlement): up to 1000 atomic units per request")
	require.Contains(t, s, "200 deposit: charged 600, cumulative 600, balance 100000 (transaction 0x")
	require.Contains(t, s, "200 voucher: charged 600, cumulative 1200")
	require.Contains(t, s, "402 corrective: the gateway has charged 1500; retrying")
	require.Contains(t, s, "200 voucher: charged 600, cumulative 2100")
	require.Contains(t, s, "200 refund: 97900 returned, balance 2100")
}
