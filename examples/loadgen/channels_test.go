package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

const (
	testNetwork  = "eip155:84532"
	testReceiver = "0x209693bc6afc0c5328ba36faf03c514ef312287c"
	testToken    = "0x036cbd53842c5426634e7929541ec2318f3dcf7e"
	testAuth     = "0x4020aa0000000000000000000000000000000001"
)

// chanScenario is one consistent channel: three charges (1000, 400, 1000
// of at most 1000 each) on a 10000 deposit, the first two claimed (1400)
// and swept. Every channel check passes it; each test below plants one
// breach.
type chanScenario struct {
	in  chanInput
	id  string
	cl  *channel.Client
	cfg channel.ChannelConfig
}

func testRequirement() x402.Requirement {
	return x402.Requirement{
		Scheme: channel.Name, Network: testNetwork, Amount: "1000", Asset: testToken, PayTo: testReceiver, MaxTimeoutSeconds: 60,
		Extra: map[string]any{channel.ExtraReceiverAuthorizer: testAuth, channel.ExtraWithdrawDelay: 900},
	}
}

func newChanScenario(t *testing.T) *chanScenario {
	t.Helper()
	key, err := secp256k1.GeneratePrivateKey()
	require.NoError(t, err)
	cl := channel.NewClient(key)
	cfg, err := cl.ChannelConfig(testRequirement(), channel.RandomSalt())
	require.NoError(t, err)
	id, err := cfg.ID(84532)
	require.NoError(t, err)
	s := &chanScenario{id: id, cl: cl, cfg: cfg}
	v, err := cl.Voucher(cfg, 84532, 2400)
	require.NoError(t, err)
	pair := testReceiver + "|" + testToken
	s.in = chanInput{
		LedgerRead: true, StatesRead: true,
		States: map[string]channel.State{id: {
			ChannelID: id, Network: testNetwork, Config: cfg, Charged: 2400, SignedMax: 2400, Signature: v.Signature,
			Balance: 10000, TotalClaimed: 1400, ClaimedUpTo: 1400,
		}},
		Escrow:   map[string]localfacilitator.EscrowChannel{id: {Config: cfg, Balance: 10000, TotalClaimed: 1400}},
		Swept:    map[string]uint64{pair: 1400},
		Signed:   map[string]map[uint64]bool{id: {1000: true, 2000: true, 2400: true}},
		Channels: map[string]chanInfo{id: {Tenant: "chan", Payer: cl.Address(), Amount: 1000, Receiver: testReceiver, Token: testToken}},
		Facil: []chanSettleRecord{
			{Type: channel.TypeDeposit, TxHash: "0xd1", Amount: "10000", Channel: id, Answered: true},
			{Type: channel.TypeClaim, TxHash: "0xc1", Claims: map[string]uint64{id: 1400}, Answered: true},
			{Type: channel.TypeSettle, TxHash: "0xs1", Amount: "1400", Answered: true},
		},
	}
	prev := uint64(0)
	for i, a := range []uint64{1000, 400, 1000} {
		s.addCharge(i, a, prev+a)
		s.in.Records = append(s.in.Records, chanRecord{Tenant: "chan", Channel: id, Kind: channel.TypeVoucher, SignedMax: prev + 1000, AskCharge: a,
			Status: 200, Outcome: outChanCharged, Charged: a, Cumulative: prev + a, Balance: 10000, HasState: true})
		prev += a
	}
	s.in.Entries = append(s.in.Entries,
		ledger.Entry{IdempotencyKey: "claim:" + id + ":1400", Tenant: "chan", AmountAtomic: "1400", Cumulative: "1400", Channel: id, TxHash: "0xc1", Status: statusClaimed},
		ledger.Entry{IdempotencyKey: "settle:1", Tenant: "chan", AmountAtomic: "1400", PayTo: testReceiver, Asset: testToken, TxHash: "0xs1", Status: statusSwept},
	)
	return s
}

func (s *chanScenario) addCharge(i int, amount, cum uint64) {
	s.in.Entries = append(s.in.Entries, ledger.Entry{
		IdempotencyKey: "charge:" + s.id + ":" + strconv.Itoa(i), Tenant: "chan", Channel: s.id,
		AmountAtomic: strconv.FormatUint(amount, 10), Cumulative: strconv.FormatUint(cum, 10), Status: statusCharged,
	})
}

// dropEntry removes the entry whose key ends with suffix.
func (s *chanScenario) dropEntry(t *testing.T, suffix string) {
	t.Helper()
	for i, e := range s.in.Entries {
		if strings.HasSuffix(e.IdempotencyKey, suffix) {
			s.in.Entries = append(s.in.Entries[:i], s.in.Entries[i+1:]...)
			return
		}
	}
	t.Fatalf("no entry %s", suffix)
}

func (s *chanScenario) state(f func(*channel.State)) {
	st := s.in.States[s.id]
	f(&st)
	s.in.States[s.id] = st
}

func (s *chanScenario) escrow(f func(*localfacilitator.EscrowChannel)) {
	e := s.in.Escrow[s.id]
	f(&e)
	s.in.Escrow[s.id] = e
}

func TestChannelChecksPassACleanChannel(t *testing.T) {
	t.Parallel()
	s := newChanScenario(t)
	// Everything claimed, as after the claim wait.
	s.state(func(st *channel.State) { st.ClaimedUpTo, st.TotalClaimed = 2400, 2400 })
	s.escrow(func(e *localfacilitator.EscrowChannel) { e.TotalClaimed = 2400 })
	s.in.Facil = append(s.in.Facil, chanSettleRecord{Type: channel.TypeClaim, TxHash: "0xc2", Claims: map[string]uint64{s.id: 2400}, Answered: true})
	s.in.Entries = append(s.in.Entries, ledger.Entry{IdempotencyKey: "claim:" + s.id + ":2400", Tenant: "chan", AmountAtomic: "1000", Cumulative: "2400", Channel: s.id, TxHash: "0xc2", Status: statusClaimed})
	cs := checkChannels(s.in)
	require.Len(t, cs, 6)
	require.Empty(t, failed(cs))
	for _, c := range cs {
		require.Empty(t, c.Skipped, c.Name)
		require.Empty(t, c.Warnings, c.Name)
	}
}

func TestChannelChecksCatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		plant        func(t *testing.T, s *chanScenario)
		check, words string
	}{
		{"a charge missing from the ledger", func(t *testing.T, s *chanScenario) { s.dropEntry(t, ":1") },
			"Σ charge entries", "a gap"},
		{"a charge recorded twice", func(t *testing.T, s *chanScenario) { s.addCharge(9, 400, 1400) },
			"Σ charge entries", "a repeat"},
		{"more charged in the KV state than in the ledger", func(t *testing.T, s *chanScenario) {
			s.state(func(st *channel.State) { st.Charged, st.SignedMax = 2900, 3400 })
			s.in.Signed[s.id][3400] = true
		}, "Σ charge entries", "chargedCumulativeAmount = 2900"},
		{"charges on a channel without state", func(t *testing.T, s *chanScenario) { delete(s.in.States, s.id) },
			"Σ charge entries", "no channel state"},
		{"more claimed in the escrow than charged", func(t *testing.T, s *chanScenario) {
			s.escrow(func(e *localfacilitator.EscrowChannel) { e.TotalClaimed = 2500 })
		}, "chargedCumulativeAmount >= claimed", "totalClaimed 2500"},
		{"claimedUpTo above the charges", func(t *testing.T, s *chanScenario) {
			s.state(func(st *channel.State) { st.ClaimedUpTo = 2401 })
		}, "chargedCumulativeAmount >= claimed", "claimedUpTo 2401"},
		{"a charge without a voucher the payer signed", func(t *testing.T, s *chanScenario) { delete(s.in.Signed[s.id], 2000) },
			"signed voucher", "no voucher for 2000"},
		{"a charge above the per-request maximum", func(t *testing.T, s *chanScenario) {
			s.in.Channels[s.id] = chanInfo{Tenant: "chan", Amount: 900, Receiver: testReceiver, Token: testToken}
			s.in.Signed[s.id] = map[uint64]bool{900: true, 1900: true, 2300: true, 2400: true}
		}, "signed voucher", "above the per-request maximum 900"},
		{"charged beyond the stored voucher", func(t *testing.T, s *chanScenario) {
			s.state(func(st *channel.State) { st.SignedMax = 2300 })
		}, "signed voucher", "> the stored voucher's 2300"},
		{"a stored voucher signed by someone else", func(t *testing.T, s *chanScenario) {
			key, _ := secp256k1.GeneratePrivateKey()
			v, _ := channel.NewClient(key).Voucher(s.cfg, 84532, 2400)
			s.state(func(st *channel.State) { st.Signature = v.Signature })
		}, "signed voucher", "does not recover to the payer"},
		{"charged beyond the escrow balance", func(t *testing.T, s *chanScenario) {
			s.escrow(func(e *localfacilitator.EscrowChannel) { e.Balance = 2000 })
		}, "signed voucher", "> the escrow balance 2000"},
		{"charged beyond the deposits", func(t *testing.T, s *chanScenario) { s.in.Facil[0].Amount = "2000" },
			"signed voucher", "> the 2000 deposited"},
		{"a claim recorded twice", func(t *testing.T, s *chanScenario) {
			s.in.Entries = append(s.in.Entries, ledger.Entry{IdempotencyKey: "claim-again", Tenant: "chan", AmountAtomic: "1400", Cumulative: "1400", Channel: s.id, TxHash: "0xc1", Status: statusClaimed})
		}, "nothing claimed twice", "claimed twice"},
		{"a claim the escrow never made", func(t *testing.T, s *chanScenario) {
			s.in.Facil[1].TxHash = "0xother"
		}, "nothing claimed twice", "matches no escrow claim"},
		{"a claim missing from the ledger", func(t *testing.T, s *chanScenario) { s.dropEntry(t, ":1400") },
			"nothing claimed twice", "Σ claim entries = 0"},
		{"a sweep missing from the ledger", func(t *testing.T, s *chanScenario) { s.dropEntry(t, "settle:1") },
			"nothing claimed twice", "Σ sweep entries = 0"},
		{"a charged answer without a charge entry", func(t *testing.T, s *chanScenario) {
			s.in.Records = append(s.in.Records, chanRecord{Channel: s.id, Kind: channel.TypeVoucher, Status: 200, Outcome: outChanCharged, Charged: 5, Cumulative: 2405, HasState: true})
		}, "every charged answer", "no charge entry"},
		{"a charge no payer got an answer for", func(t *testing.T, s *chanScenario) { s.in.Records = s.in.Records[:2] },
			"every charged answer", "1 charge entries no payer got an answer for"},
		{"a payer's anomaly", func(t *testing.T, s *chanScenario) {
			s.in.Anomalies = append(s.in.Anomalies, chanAnomaly{Channel: s.id, What: "one voucher charged twice"})
		}, "every charged answer", "one voucher charged twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newChanScenario(t)
			tc.plant(t, s)
			requireFailure(t, checkChannels(s.in), tc.check, tc.words)
		})
	}
}

func TestChannelChecksCatchAnUnclaimedCharge(t *testing.T) {
	t.Parallel()
	s := newChanScenario(t) // 2400 charged, 1400 claimed
	requireFailure(t, checkChannels(s.in), "everything charged is claimed", "2400 charged, 1400 claimed")
	// A request cut off on the channel may hold its lease: excepted.
	s.in.Records = append(s.in.Records, chanRecord{Channel: s.id, Kind: channel.TypeVoucher, Outcome: outConnError})
	require.Empty(t, failed(checkChannels(s.in)))
	// A claimer pass cut off by a SIGKILL holds every claim back.
	s.in.Records = s.in.Records[:len(s.in.Records)-1]
	s.in.ClaimerLeased = true
	cs := checkChannels(s.in)
	require.Empty(t, failed(cs))
	require.Contains(t, cs[5].Skipped, "claimer's lease")
}

func TestChannelChargeLostToACutOffRequestIsAWarning(t *testing.T) {
	t.Parallel()
	s := newChanScenario(t)
	s.in.Records[2] = chanRecord{Channel: s.id, Kind: channel.TypeVoucher, Outcome: outConnError}
	cs := checkChannels(s.in)
	require.Empty(t, failed(cs))
	require.Contains(t, strings.Join(cs[4].Warnings, "\n"), "lost to a cut-off request")
}

func TestChannelClaimCutOffIsAWarningUnlessStrict(t *testing.T) {
	t.Parallel()
	s := newChanScenario(t)
	// The escrow claimed up to 2400 in a claim whose answer was withheld;
	// the gateway has not recorded it yet.
	at := time.Now()
	s.in.Facil = append(s.in.Facil, chanSettleRecord{Time: at, Type: channel.TypeClaim, TxHash: "0xc2", Claims: map[string]uint64{s.id: 2400}})
	s.escrow(func(e *localfacilitator.EscrowChannel) { e.TotalClaimed = 2400 })
	cs := checkChannels(s.in)
	require.Empty(t, failed(cs))
	require.Contains(t, strings.Join(cs[3].Warnings, "\n"), "had its answer cut off")
	s.in.StrictCrash = true
	requireFailure(t, checkChannels(s.in), "nothing claimed twice", "a claim not recorded")

	// Answered, but a SIGKILL came right after: the same.
	s.in.StrictCrash = false
	s.in.Facil[len(s.in.Facil)-1].Answered = true
	require.NotEmpty(t, failed(checkChannels(s.in)), "an answered claim with no SIGKILL after it must be recorded")
	s.in.Kills = []killWindow{{Killed: at.Add(time.Second), Healthy: at.Add(2 * time.Second)}}
	require.Empty(t, failed(checkChannels(s.in)))
	s.in.Kills = []killWindow{{Killed: at.Add(time.Minute), Healthy: at.Add(time.Minute + time.Second)}}
	require.NotEmpty(t, failed(checkChannels(s.in)), "a SIGKILL a minute later does not excuse it")
	// The gateway killed while the call was in flight, the escrow
	// executing it afterwards: cut off.
	s.in.Facil[len(s.in.Facil)-1].Start = at.Add(-300 * time.Millisecond)
	s.in.Kills = []killWindow{{Killed: at.Add(-100 * time.Millisecond), Healthy: at.Add(time.Second)}}
	require.Empty(t, failed(checkChannels(s.in)))
	s.in.Kills = []killWindow{{Killed: at.Add(-time.Second), Healthy: at.Add(time.Second)}}
	require.NotEmpty(t, failed(checkChannels(s.in)), "a SIGKILL before the call began does not excuse it")
}

func TestChannelChecksSkipWithoutState(t *testing.T) {
	t.Parallel()
	s := newChanScenario(t)
	s.in.StatesRead, s.in.States, s.in.StatesErr = false, nil, "memory"
	cs := checkChannels(s.in)
	require.NotEmpty(t, cs[0].Skipped)
	require.NotEmpty(t, cs[1].Skipped)
	s.in.LedgerRead = false
	for _, c := range checkChannels(s.in) {
		require.NotEmpty(t, c.Skipped, c.Name)
	}
}

func TestClassifyChannel(t *testing.T) {
	t.Parallel()
	req := testRequirement()
	paid := func(extra map[string]any) http.Header {
		v, err := x402.EncodeSettleResponse(&x402.SettleResponse{Success: true, Network: testNetwork, Extra: extra})
		require.NoError(t, err)
		h := http.Header{}
		h.Set(x402.HeaderPaymentResponse, v)
		return h
	}
	state := channel.ChannelState{ChannelID: "0xabc", Balance: "5000", TotalClaimed: "0", RefundNonce: "0", ChargedCumulativeAmount: "1700"}
	r := chanRecord{Channel: "0xABC", Kind: channel.TypeVoucher}
	require.Equal(t, outChanCharged, classifyChannel(200, paid(map[string]any{channel.ExtraChargedAmount: "700", channel.ExtraChannelState: state}), nil, &r))
	require.Equal(t, uint64(700), r.Charged)
	require.Equal(t, uint64(1700), r.Cumulative)
	require.Equal(t, uint64(5000), r.Balance)
	r = chanRecord{Channel: "0xabc", Kind: channel.TypeVoucher}
	require.Equal(t, outChanNoReceipt, classifyChannel(200, http.Header{}, nil, &r))
	require.Equal(t, outChanNoReceipt, classifyChannel(200, paid(map[string]any{channel.ExtraChannelState: state}), nil, &r), "no chargedAmount")
	r = chanRecord{Channel: "0xother", Kind: channel.TypeVoucher}
	require.Equal(t, outChanNoReceipt, classifyChannel(200, paid(map[string]any{channel.ExtraChargedAmount: "1", channel.ExtraChannelState: state}), nil, &r), "another channel's state")

	challenge := func(req x402.Requirement) http.Header {
		raw, err := json.Marshal(x402.PaymentRequired{X402Version: 2, Accepts: []x402.PaymentRequirements{req.V2()}, Resource: x402.ResourceInfo{URL: "http://x/t/chan/ch/1"}})
		require.NoError(t, err)
		h := http.Header{}
		h.Set(x402.HeaderPaymentRequired, base64.StdEncoding.EncodeToString(raw))
		return h
	}
	corr := req
	corr.Extra = map[string]any{channel.ExtraChannelState: state, channel.ExtraVoucherState: channel.VoucherState{SignedMaxClaimable: "2000"}}
	r = chanRecord{Kind: channel.TypeVoucher}
	require.Equal(t, outChanCorrective, classifyChannel(402, challenge(corr), nil, &r))
	require.Equal(t, outChanRefused, classifyChannel(402, challenge(req), nil, &r))
	require.Equal(t, outChanBusy, classifyChannel(409, http.Header{}, []byte(`{"ok":false,"error":"invalid_batch_settlement_evm_channel_busy"}`), &r))
	require.Equal(t, "502 tenant_worker_failure", classifyChannel(502, http.Header{}, []byte(`{"ok":false,"error":"tenant_worker_failure"}`), &r))
}

func TestUpstreamReportsTheAskedCharge(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(&upstream{})
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/healthy/ch/1?" + chanQueryCharge + "=420")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, `{"amount":"420"}`, resp.Header.Get(x402.HeaderSettlementOverrides))
	resp, err = http.Get(srv.URL + "/healthy/items/1")
	require.NoError(t, err)
	resp.Body.Close()
	require.Empty(t, resp.Header.Get(x402.HeaderSettlementOverrides))
}

func TestChannelTenantsAndMix(t *testing.T) {
	t.Parallel()
	ts := genChannelTenants("lgtest", 2)
	b, err := directoryJSON(ts)
	require.NoError(t, err)
	require.Contains(t, string(b), `"schemes": [`)
	require.Contains(t, string(b), `"batch-settlement"`)
	for _, x := range ts {
		require.True(t, limitsOf(x).Paid)
	}
	// The mixed workload leaves channel tenants to the channel payers.
	w := newWorkload("http://x", "lgtest", append(genTenants("lgtest", 1, 1), ts...), nil, 1, 1, newRecorder())
	require.Len(t, w.paid, 1)

	var buf bytes.Buffer
	c, err := parseFlags([]string{"-mix", "channels"}, &buf)
	require.NoError(t, err)
	require.Equal(t, chanPayersDefault, c.chanPayers)
	c, err = parseFlags([]string{"-channel-payers", "3"}, &buf)
	require.NoError(t, err)
	require.Equal(t, 3, c.chanPayers)
	require.Equal(t, mixDefault, c.mix)
	_, err = parseFlags([]string{"-channel-payers", "-1"}, &buf)
	require.Error(t, err)
}

// TestChannelFacilitatorRecordsDepositsAndClaims runs a deposit and a claim
// through the faulty facilitator (faults off) and checks what it records.
func TestChannelFacilitatorRecordsDepositsAndClaims(t *testing.T) {
	t.Parallel()
	fac, err := newFaultyFacilitator(facilitatorFaults{}, make(chan struct{}))
	require.NoError(t, err)
	srv := httptest.NewServer(fac)
	defer srv.Close()
	req := testRequirement()
	req.Extra[channel.ExtraReceiverAuthorizer] = fac.lf.Address()
	req.Resource = x402.ResourceInfo{URL: "http://gw/t/chan/ch/1"}
	key, err := secp256k1.GeneratePrivateKey()
	require.NoError(t, err)
	cl := channel.NewClient(key)
	cfg, err := cl.ChannelConfig(req, channel.RandomSalt())
	require.NoError(t, err)
	id, _ := cfg.ID(84532)
	now := time.Now()
	dep, err := cl.DepositPayload(req, cfg, 5000, 1000, now.Add(-time.Minute), now.Add(time.Minute))
	require.NoError(t, err)
	post := func(payload any) *x402.SettleResponse {
		p, err := channel.Envelope(req, payload)
		require.NoError(t, err)
		remote, err := x402.NewFacilitatorClient(srv.URL, x402.FacilitatorConfig{})
		require.NoError(t, err)
		sr, err := remote.Settle(context.Background(), x402.FacilitatorRequest{Payment: p, Requirement: req})
		require.NoError(t, err)
		return sr
	}
	require.True(t, post(dep).Success)
	v, err := cl.Voucher(cfg, 84532, 1000)
	require.NoError(t, err)
	claim := channel.ClaimPayload{Type: channel.TypeClaim, Claims: []channel.Claim{{
		Voucher:   channel.ClaimVoucher{Channel: cfg, MaxClaimableAmount: "1000"},
		Signature: v.Signature, TotalClaimed: "700",
	}}}
	require.True(t, post(claim).Success)
	recs := fac.ChannelSettles()
	require.Len(t, recs, 2)
	require.Equal(t, channel.TypeDeposit, recs[0].Type)
	require.Equal(t, id, recs[0].Channel)
	require.Equal(t, "5000", recs[0].Amount)
	require.Equal(t, channel.TypeClaim, recs[1].Type)
	require.Equal(t, map[string]uint64{id: 700}, recs[1].Claims)
	require.Empty(t, fac.Settles(), "channel calls are not per-request settlements")
	esc, ok := fac.lf.Escrow().Channel(id)
	require.True(t, ok)
	require.Equal(t, uint64(700), esc.TotalClaimed)
}

func TestEarlierChannelsAreFound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := "sqlite:" + t.TempDir() + "/kv.db"
	left, err := earlierChannels(ctx, url)
	require.NoError(t, err)
	require.False(t, left, "no store yet")
	st, closeFn, err := openKV(ctx, url)
	require.NoError(t, err)
	left, err = earlierChannels(ctx, url)
	require.NoError(t, err)
	require.False(t, left, "an empty store")
	require.NoError(t, st.Set(ctx, "x402ch:q:tail", []byte("3"), 0))
	closeFn()
	left, err = earlierChannels(ctx, url)
	require.NoError(t, err)
	require.True(t, left)
}

// A sweep whose answer was cut off is never recorded (the next settle
// finds nothing left): short by exactly that sweep is a warning, a breach
// with -strict-crash, and a shortfall the cut-off sweeps do not explain is
// a breach.
func TestChannelSweepCutOffIsAWarningUnlessStrict(t *testing.T) {
	t.Parallel()
	s := newChanScenario(t)
	s.in.ClaimerLeased = true // the scenario's unclaimed charge is not this test's
	s.dropEntry(t, "settle:1")
	for i := range s.in.Facil {
		if s.in.Facil[i].TxHash == "0xs1" {
			s.in.Facil[i].Answered = false
		}
	}
	cs := checkChannels(s.in)
	require.Empty(t, failed(cs))
	require.Contains(t, strings.Join(cs[3].Warnings, "\n"), "exactly the cut-off sweeps")
	s.in.StrictCrash = true
	requireFailure(t, checkChannels(s.in), "nothing claimed twice", "Σ sweep entries = 0")
	s.in.StrictCrash = false
	for pair := range s.in.Swept {
		s.in.Swept[pair] = 1500 // 100 more than the cut-off sweep
	}
	requireFailure(t, checkChannels(s.in), "nothing claimed twice", "the escrow settled 1500")
}
