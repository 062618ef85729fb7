package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

// Outcomes of a request, as the harness classifies its answer. Gateway
// errors are "<status> <error code>" (for example "429 rate_limited"); a
// worker's own error answer is "<status> worker".
const (
	outServed        = "served"              // 2xx, no payment involved
	outPaid          = "paid"                // 2xx with a successful settle response
	outReplayed      = "replayed"            // 2xx with X-Payment-Deduped: true
	outPaidNoReceipt = "2xx paid no-receipt" // 2xx to a paid request without a settle response: a bug
	outChallenge     = "402 challenge"       // 402 to a request without payment
	outRejected      = "402 rejected"        // 402 to a payment that did not verify or match
	outSettleFailed  = "402 settle_failed"   // 402 with a failed settle response
	outSettlePending = "402 settle_pending"  // 402 with a pending settle response
	outConnError     = "conn_error"          // no answer: transport error
)

// Scenarios of the mixed workload, with their weights.
var scenarioWeights = []struct {
	name   string
	weight int
}{
	{"free", 30},
	{"free_hot_caller", 8},
	{"paid", 32},
	{"replay", 5},
	{"replay_concurrent", 5},
	{"replay_other_path", 3},
	{"pay_garbage", 3},
	{"pay_wrong_amount", 3},
	{"pay_expired", 3},
	{"unknown_tenant", 1},
}

// paidRequest remembers a request that was paid, for replays.
type paidRequest struct {
	tenant        *tenantSpec
	path          string
	header, value string
	authKey       string
}

// workload sends the mixed traffic.
type workload struct {
	base    string
	prefix  string
	client  *http.Client
	free    []*tenantSpec
	hot     []*tenantSpec // free tenants with a tight per-caller rate
	paid    []*tenantSpec
	signers []*localfacilitator.Signer
	callers int
	rec     *recorder
	hostile *hostileMix // -mix hostile (hostile.go), or nil

	mu     sync.Mutex
	reqs   map[string]x402.Requirement // slug -> requirement from its last challenge
	recent []paidRequest               // ring of paid requests
	next   int
}

func newWorkload(base, prefix string, tenants []*tenantSpec, signers []*localfacilitator.Signer, callers, concurrency int, rec *recorder) *workload {
	w := &workload{
		base: base, prefix: prefix, signers: signers, callers: callers, rec: rec,
		reqs: map[string]x402.Requirement{},
		client: &http.Client{
			Timeout: 30 * time.Second,
			Transport: &http.Transport{
				MaxIdleConns: 4 * concurrency, MaxIdleConnsPerHost: 4 * concurrency,
				IdleConnTimeout: 30 * time.Second, DisableCompression: true,
			},
		},
	}
	for _, t := range tenants {
		switch {
		case t.channel:
		case t.paid():
			w.paid = append(w.paid, t)
		case t.tightRate():
			w.hot = append(w.hot, t)
			w.free = append(w.free, t)
		default:
			w.free = append(w.free, t)
		}
	}
	if len(w.hot) == 0 {
		w.hot = w.free
	}
	return w
}

// run loops one virtual client until ctx is done; requests already started
// are allowed to finish.
func (w *workload) run(ctx context.Context, rng *rand.Rand) {
	table := w.scenarioTable()
	total := 0
	for _, s := range table {
		total += s.weight
	}
	for ctx.Err() == nil {
		x := rng.IntN(total)
		for _, s := range table {
			if x < s.weight {
				w.scenario(s.name, rng)
				break
			}
			x -= s.weight
		}
	}
}

func pick[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }

func (w *workload) caller(rng *rand.Rand) string {
	return fmt.Sprintf("agent-%d", rng.IntN(max(w.callers, 1)))
}

func randomPath(rng *rand.Rand) string {
	return fmt.Sprintf("/items/%d?page=%d", rng.IntN(1000), rng.IntN(10))
}

func (w *workload) scenario(name string, rng *rand.Rand) {
	switch name {
	case "free":
		if len(w.free) > 0 {
			w.send(name, pick(rng, w.free), randomPath(rng), w.caller(rng), nil, "")
			return
		}
		fallthrough
	case "free_hot_caller":
		if len(w.hot) > 0 {
			w.send(name, pick(rng, w.hot), randomPath(rng), fmt.Sprintf("hot-%d", rng.IntN(2)), nil, "")
		}
	case "paid":
		w.pay(name, rng, "ok")
	case "pay_garbage", "pay_wrong_amount", "pay_expired":
		w.pay(name, rng, name)
	case "replay", "replay_other_path":
		p, ok := w.recentPaid(rng)
		if !ok {
			w.pay("paid", rng, "ok")
			return
		}
		path := p.path
		if name == "replay_other_path" {
			path += "&other=1"
		}
		w.send(name, p.tenant, path, w.caller(rng), http.Header{p.header: {p.value}}, p.authKey)
	case "replay_concurrent":
		w.pay(name, rng, "concurrent")
	case "unknown_tenant":
		t := &tenantSpec{Slug: w.prefix + "-nope"}
		w.send(name, t, randomPath(rng), w.caller(rng), nil, "")
	default:
		w.hostileScenario(name, rng)
	}
}

// requirement returns the tenant's payment requirement, asking the gateway
// for a 402 challenge when none is cached (or, now and then, anyway).
func (w *workload) requirement(scen string, t *tenantSpec, rng *rand.Rand, caller string) (x402.Requirement, bool) {
	w.mu.Lock()
	req, ok := w.reqs[t.Slug]
	w.mu.Unlock()
	if ok && rng.Float64() > 0.25 {
		return req, true
	}
	o, h := w.send(scen+"/challenge", t, randomPath(rng), caller, nil, "")
	if o.Status != http.StatusPaymentRequired {
		return req, ok
	}
	pr, err := x402.DecodePaymentRequired(h.Get(x402.HeaderPaymentRequired))
	if err != nil || len(pr.Accepts) == 0 {
		return req, ok
	}
	req = x402.RequirementFromV2(pr.Accepts[0], pr.Resource)
	w.mu.Lock()
	w.reqs[t.Slug] = req
	w.mu.Unlock()
	return req, true
}

// pay runs one paid request of the given kind: "ok" (a valid payment),
// "concurrent" (one valid payment sent four times at once), or an invalid
// one ("pay_garbage", "pay_wrong_amount", "pay_expired").
func (w *workload) pay(scen string, rng *rand.Rand, kind string) {
	if len(w.paid) == 0 {
		return
	}
	t := pick(rng, w.paid)
	caller := w.caller(rng)
	path := randomPath(rng)
	if kind == "pay_garbage" {
		w.send(scen, t, path, caller, http.Header{x402.HeaderPaymentSignature: {"bm90IGpzb24gYXQgYWxs"}}, "")
		return
	}
	req, ok := w.requirement(scen, t, rng, caller)
	if !ok {
		return
	}
	signer := pick(rng, w.signers)
	version := 2
	if rng.IntN(5) == 0 {
		version = 1
	}
	var opts localfacilitator.SignOptions
	switch kind {
	case "pay_wrong_amount":
		a, _ := new(big.Int).SetString(req.Amount, 10)
		if a == nil {
			return
		}
		req.Amount = a.Mul(a, big.NewInt(2)).String()
	case "pay_expired":
		now := time.Now()
		before := now.Add(-time.Hour)
		after := now.Add(-2 * time.Hour)
		opts = localfacilitator.SignOptions{Now: now.Add(-2 * time.Hour), ValidAfter: &after, ValidBefore: &before}
	}
	sp, err := signer.Sign(req, version, opts)
	if err != nil {
		w.rec.add(observation{Start: time.Now(), End: time.Now(), Tenant: t.Slug, Scenario: scen, Outcome: "sign_error", Err: err.Error()})
		return
	}
	key := authKey(sp.Value)
	h := http.Header{sp.Header: {sp.Value}}
	if kind != "concurrent" {
		o, _ := w.send(scen, t, path, caller, h, key)
		if o.Outcome == outPaid {
			w.remember(paidRequest{tenant: t, path: path, header: sp.Header, value: sp.Value, authKey: key})
		}
		return
	}
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Go(func() {
			o, _ := w.send(scen, t, path, caller, h, key)
			if o.Outcome == outPaid {
				w.remember(paidRequest{tenant: t, path: path, header: sp.Header, value: sp.Value, authKey: key})
			}
		})
	}
	wg.Wait()
}

// authKey is the idempotency key the gateway derives from a payment header
// (the harness sends no explicit key).
func authKey(headerValue string) string {
	p, err := x402.DecodePaymentHeader(headerValue)
	if err != nil {
		return ""
	}
	return x402.IdempotencyKey(p, nil)
}

func (w *workload) remember(p paidRequest) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.recent) < 256 {
		w.recent = append(w.recent, p)
		return
	}
	w.recent[w.next] = p
	w.next = (w.next + 1) % len(w.recent)
}

func (w *workload) recentPaid(rng *rand.Rand) (paidRequest, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.recent) == 0 {
		return paidRequest{}, false
	}
	return w.recent[rng.IntN(len(w.recent))], true
}

// send makes one GET to the tenant, records what happened and returns the
// observation and the answer's headers.
func (w *workload) send(scen string, t *tenantSpec, path, caller string, h http.Header, key string) (observation, http.Header) {
	o := observation{Tenant: t.Slug, Scenario: scen, Paid: h != nil, AuthKey: key}
	req, err := http.NewRequest(http.MethodGet, w.base+"/t/"+t.Slug+path, nil)
	if err != nil {
		panic(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("X-Agent-Id", caller)
	o.Start = time.Now()
	resp, err := w.client.Do(req)
	if err != nil {
		o.End = time.Now()
		o.Outcome, o.Err = outConnError, err.Error()
		w.rec.add(o)
		return o, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	o.End = time.Now()
	if err != nil {
		o.Outcome, o.Err = outConnError, err.Error()
		w.rec.add(o)
		return o, nil
	}
	o.Status = resp.StatusCode
	o.Deduped = resp.Header.Get("X-Payment-Deduped") == "true"
	o.Outcome, o.TxHash = classify(resp.StatusCode, resp.Header, body, o.Paid)
	w.rec.add(o)
	return o, resp.Header
}

// classify names the outcome of an answer and returns the transaction hash
// of a successful settle response.
func classify(status int, h http.Header, body []byte, paid bool) (outcome, tx string) {
	var sr *x402.SettleResponse
	for _, name := range []string{x402.HeaderPaymentResponse, x402.HeaderXPaymentResponse} {
		if v := h.Get(name); v != "" {
			if r, err := x402.DecodeSettleResponse(v); err == nil {
				sr = r
			}
		}
	}
	switch {
	case status >= 200 && status < 300:
		switch {
		case h.Get("X-Payment-Deduped") == "true":
			if sr != nil {
				tx = sr.Transaction
			}
			return outReplayed, tx
		case sr != nil && sr.Success:
			return outPaid, sr.Transaction
		case paid:
			return outPaidNoReceipt, ""
		}
		return outServed, ""
	case status == http.StatusPaymentRequired:
		switch {
		case sr != nil && sr.Pending():
			return outSettlePending, ""
		case sr != nil:
			return outSettleFailed, ""
		case paid:
			return outRejected, ""
		}
		return outChallenge, ""
	}
	var e struct {
		OK    *bool  `json:"ok"`
		Error string `json:"error"`
	}
	if json.Unmarshal(bytes.TrimSpace(body), &e) == nil && e.OK != nil && !*e.OK && e.Error != "" {
		return fmt.Sprintf("%d %s", status, e.Error), ""
	}
	return fmt.Sprintf("%d worker", status), ""
}
