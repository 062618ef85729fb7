package main

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

// facilitatorFaults are the fractions (0..1) of facilitator calls that
// misbehave.
type facilitatorFaults struct {
	Slow           float64       // verify or settle answers after up to SlowDelay
	SlowDelay      time.Duration //
	Verify5xx      float64       // verify answers 503 with no verdict
	Settle5xx      float64       // settle answers 503 with no verdict, settling nothing
	SettleFail     float64       // settle answers 200 success:false, settling nothing
	Timeout        float64       // verify or settle hangs for TimeoutDelay, settling nothing
	SettledTimeout float64       // settle settles, then hangs for TimeoutDelay (the gateway sees no answer)
	TimeoutDelay   time.Duration // longer than the gateway's facilitator timeout (10 s by default)
}

// settleRecord is one successful settlement made by the facilitator: money
// that moved. The invariant checker matches these against the ledger.
type settleRecord struct {
	Time     time.Time
	Tenant   string // from the requirement's resource URL (/t/<slug>/...)
	Key      string // the idempotency key the gateway derives from the authorization
	TxHash   string
	Payer    string
	Nonce    string
	Amount   string // atomic units, the authorization's value
	PayTo    string
	Network  string
	Answered bool // false when the answer was withheld (settle-then-hang fault)
}

// faultyFacilitator serves the x402 facilitator protocol in front of a
// localfacilitator.Facilitator, injecting faults and recording every
// successful settlement.
type faultyFacilitator struct {
	lf     *localfacilitator.Facilitator
	faults facilitatorFaults
	// stop ends hung requests early at the end of the run.
	stop <-chan struct{}

	inflight sync.WaitGroup
	mu       sync.Mutex
	settles  []settleRecord
	counts   map[string]int64
	// chanSettles are the successful batch-settlement settle calls
	// (deposits, claims, sweeps, refunds), kept apart from settles.
	chanSettles []chanSettleRecord
	// calm turns every fault off (for the reconciliation after the run).
	calm atomic.Bool
}

// chanSettleRecord is one successful batch-settlement /settle call: money
// that moved in the emulated escrow.
type chanSettleRecord struct {
	Start    time.Time // when the call came in
	Time     time.Time // when the escrow executed it
	Type     string    // deposit, claim, settle, refund
	TxHash   string
	Amount   string // the response's amount (deposit, sweep, refund)
	Channel  string // deposit and refund
	Claims   map[string]uint64
	Answered bool
}

func newFaultyFacilitator(f facilitatorFaults, stop <-chan struct{}) (*faultyFacilitator, error) {
	lf, err := localfacilitator.New(localfacilitator.Config{})
	if err != nil {
		return nil, err
	}
	return &faultyFacilitator{lf: lf, faults: f, stop: stop, counts: map[string]int64{}}, nil
}

func (f *faultyFacilitator) count(name string) {
	f.mu.Lock()
	f.counts[name]++
	f.mu.Unlock()
}

// Settles returns the successful settlements so far.
func (f *faultyFacilitator) Settles() []settleRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]settleRecord(nil), f.settles...)
}

// Counts returns how many calls of each kind and fault were served.
func (f *faultyFacilitator) Counts() map[string]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int64, len(f.counts))
	for k, v := range f.counts {
		out[k] = v
	}
	return out
}

// Wait blocks until no call is being served.
func (f *faultyFacilitator) Wait() { f.inflight.Wait() }

func (f *faultyFacilitator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.inflight.Add(1)
	defer f.inflight.Done()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/supported":
		resp, err := f.lf.Supported(r.Context())
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, resp)
	case r.Method == http.MethodPost && (r.URL.Path == "/verify" || r.URL.Path == "/settle"):
		body, err := io.ReadAll(io.LimitReader(r.Body, x402.MaxRequestBodyBytes))
		if err != nil {
			return
		}
		req, err := x402.ParseFacilitatorRequest(body)
		if err != nil {
			f.count(r.URL.Path[1:] + " unparseable")
			writeJSON(w, http.StatusBadRequest, map[string]any{"isValid": false, "success": false, "invalidReason": x402.ReasonInvalidPayload, "errorReason": x402.ReasonInvalidPayload})
			return
		}
		if r.URL.Path == "/verify" {
			f.verify(w, r, req)
		} else if req.Requirement.Scheme == channel.Name {
			f.settleChannel(w, r, req)
		} else {
			f.settle(w, r, req)
		}
	default:
		http.NotFound(w, r)
	}
}

// hang waits d, or until the gateway gives up or the run stops.
func (f *faultyFacilitator) hang(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-f.stop:
	}
}

// roll returns the fault dice: uniform in [0,1), or 1 (no fault) once
// calm.
func (f *faultyFacilitator) roll() float64 {
	if f.calm.Load() {
		return 1
	}
	return rand.Float64()
}

func (f *faultyFacilitator) slowMaybe(ctx context.Context) {
	if f.faults.SlowDelay > 0 && f.roll() < f.faults.Slow {
		f.hang(ctx, time.Duration(rand.Int64N(int64(f.faults.SlowDelay))+1))
	}
}

func (f *faultyFacilitator) verify(w http.ResponseWriter, r *http.Request, req x402.FacilitatorRequest) {
	x := f.roll()
	switch {
	case x < f.faults.Verify5xx:
		f.count("verify 503 injected")
		http.Error(w, "injected facilitator outage", http.StatusServiceUnavailable)
		return
	case x < f.faults.Verify5xx+f.faults.Timeout:
		f.count("verify timeout injected")
		f.hang(r.Context(), f.faults.TimeoutDelay)
		http.Error(w, "injected facilitator timeout", http.StatusGatewayTimeout)
		return
	}
	f.slowMaybe(r.Context())
	resp, err := f.lf.Verify(r.Context(), req)
	if err != nil {
		f.count("verify error")
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	if resp.IsValid {
		f.count("verify valid")
	} else {
		f.count("verify invalid: " + resp.InvalidReason)
	}
	writeJSON(w, http.StatusOK, resp)
}

func (f *faultyFacilitator) settle(w http.ResponseWriter, r *http.Request, req x402.FacilitatorRequest) {
	x := f.roll()
	ff := f.faults
	hangAfter := false
	switch {
	case x < ff.Settle5xx:
		f.count("settle 503 injected (not settled)")
		http.Error(w, "injected facilitator outage", http.StatusServiceUnavailable)
		return
	case x < ff.Settle5xx+ff.SettleFail:
		f.count("settle success:false injected (not settled)")
		writeJSON(w, http.StatusOK, x402.SettleResponse{Success: false, ErrorReason: "unexpected_settle_error", Payer: req.Payment.Payer, Network: req.Requirement.Network})
		return
	case x < ff.Settle5xx+ff.SettleFail+ff.Timeout:
		f.count("settle timeout injected (not settled)")
		f.hang(r.Context(), ff.TimeoutDelay)
		http.Error(w, "injected facilitator timeout", http.StatusGatewayTimeout)
		return
	case x < ff.Settle5xx+ff.SettleFail+ff.Timeout+ff.SettledTimeout:
		hangAfter = true
	}
	f.slowMaybe(r.Context())
	// Settle even if the gateway has given up: money moves regardless.
	resp, err := f.lf.Settle(context.WithoutCancel(r.Context()), req)
	if err != nil {
		f.count("settle error")
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	if !resp.Success {
		f.count("settle refused: " + resp.ErrorReason)
		writeJSON(w, http.StatusOK, resp)
		return
	}
	rec := settleRecord{
		Time: time.Now(), Tenant: tenantOfResource(req.Requirement.Resource.URL),
		Key:    x402.IdempotencyKey(req.Payment, nil),
		TxHash: resp.Transaction, Payer: req.Payment.Authorization.From, Nonce: req.Payment.Authorization.Nonce,
		Amount: req.Payment.Authorization.Value, PayTo: req.Requirement.PayTo, Network: req.Requirement.Network,
		Answered: !hangAfter,
	}
	f.mu.Lock()
	f.settles = append(f.settles, rec)
	f.mu.Unlock()
	if hangAfter {
		f.count("settled, then timeout injected")
		f.hang(r.Context(), ff.TimeoutDelay)
		http.Error(w, "injected facilitator timeout after settling", http.StatusGatewayTimeout)
		return
	}
	f.count("settled")
	writeJSON(w, http.StatusOK, resp)
}

// ChannelSettles returns the successful batch-settlement settle calls.
func (f *faultyFacilitator) ChannelSettles() []chanSettleRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]chanSettleRecord(nil), f.chanSettles...)
}

// settleChannel serves a batch-settlement /settle (a deposit, claim,
// settle sweep or refund) with the same faults as any settle, and records
// what moved.
func (f *faultyFacilitator) settleChannel(w http.ResponseWriter, r *http.Request, req x402.FacilitatorRequest) {
	var probe struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(req.Payment.Payload, &probe)
	kind := "channel " + probe.Type
	start := time.Now()
	x := f.roll()
	ff := f.faults
	hangAfter := false
	switch {
	case x < ff.Settle5xx:
		f.count(kind + " 503 injected (not executed)")
		http.Error(w, "injected facilitator outage", http.StatusServiceUnavailable)
		return
	case x < ff.Settle5xx+ff.SettleFail:
		f.count(kind + " success:false injected (not executed)")
		writeJSON(w, http.StatusOK, x402.SettleResponse{Success: false, ErrorReason: "unexpected_settle_error", Network: req.Requirement.Network})
		return
	case x < ff.Settle5xx+ff.SettleFail+ff.Timeout:
		f.count(kind + " timeout injected (not executed)")
		f.hang(r.Context(), ff.TimeoutDelay)
		http.Error(w, "injected facilitator timeout", http.StatusGatewayTimeout)
		return
	case x < ff.Settle5xx+ff.SettleFail+ff.Timeout+ff.SettledTimeout:
		hangAfter = true
	}
	f.slowMaybe(r.Context())
	resp, err := f.lf.Settle(context.WithoutCancel(r.Context()), req)
	if err != nil {
		f.count(kind + " error")
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	if !resp.Success {
		f.count(kind + " refused: " + resp.ErrorReason)
		writeJSON(w, http.StatusOK, resp)
		return
	}
	rec := chanSettleRecord{Start: start, Time: time.Now(), Type: probe.Type, TxHash: resp.Transaction, Amount: resp.Amount, Answered: !hangAfter}
	switch probe.Type {
	case channel.TypeDeposit, channel.TypeRefund:
		var pl struct {
			Voucher struct {
				ChannelID string `json:"channelId"`
			} `json:"voucher"`
		}
		_ = json.Unmarshal(req.Payment.Payload, &pl)
		rec.Channel = strings.ToLower(pl.Voucher.ChannelID)
	}
	if probe.Type == channel.TypeClaim || probe.Type == channel.TypeRefund {
		var pl struct {
			Claims []channel.Claim `json:"claims"`
		}
		_ = json.Unmarshal(req.Payment.Payload, &pl)
		chainID, _ := x402.EVMChainID(req.Requirement.Network)
		rec.Claims = map[string]uint64{}
		for _, c := range pl.Claims {
			if id, err := c.Voucher.Channel.ID(chainID); err == nil {
				rec.Claims[id], _ = strconv.ParseUint(c.TotalClaimed, 10, 64)
			}
		}
	}
	f.mu.Lock()
	f.chanSettles = append(f.chanSettles, rec)
	f.mu.Unlock()
	if hangAfter {
		f.count(kind + " executed, then timeout injected")
		f.hang(r.Context(), ff.TimeoutDelay)
		http.Error(w, "injected facilitator timeout after settling", http.StatusGatewayTimeout)
		return
	}
	f.count(kind + " executed")
	writeJSON(w, http.StatusOK, resp)
}

// tenantOfResource returns <slug> of a resource URL whose path is
// /t/<slug>/..., or "".
func tenantOfResource(resource string) string {
	u, err := url.Parse(resource)
	if err != nil {
		return ""
	}
	rest, ok := strings.CutPrefix(u.Path, "/t/")
	if !ok {
		return ""
	}
	slug, _, _ := strings.Cut(rest, "/")
	return slug
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
