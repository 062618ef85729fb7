package main

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

// The hostile mix (-mix hostile) adds to the mixed workload what a hostile
// client or worker does, and checks that the money invariants still hold
// and that the gateway refuses what it must:
//
//   - rotating caller ids: one client sends a burst under a fresh X-Agent-Id
//     per request to tenants with usage quotas and spend caps (which the
//     quota invariants then hold to the exact count, whatever the ids);
//   - slow bodies: a raw connection promises a body (Content-Length) and
//     trickles it a byte at a time, on free and paid tenants, sometimes
//     abandoning it half way;
//   - worker 402s: tenants whose worker answers every request 402 with its
//     own challenge; the gateway must answer 502 tenant_worker_failure and
//     settle nothing;
//   - forging workers: tenants whose worker answers 200 with the gateway's
//     payment and limit headers forged; no forged value may reach the
//     client, and paid requests still settle once;
//   - far-future authorizations: valid payments signed with validBefore in
//     the year 9999, which the gateway must refuse with a 402 and never
//     settle.

// Mixes of -mix.
const (
	mixDefault  = "default"
	mixHostile  = "hostile"
	mixChannels = "channels" // channels.go
)

// Worker names of the hostile tenants, served by hostileWorkers.
const (
	workerHostile402 = "loadgen-hostile-402"
	workerForger     = "loadgen-hostile-forger"
)

const (
	// hostileMarkHeader is on every answer of a hostile worker: an answer
	// carrying it is the worker's own, forwarded.
	hostileMarkHeader = "X-Loadgen-Hostile-Worker"
	// forgedMark starts every header value a forging worker sets.
	forgedMark = "~forged~"
)

// Scenarios of the hostile mix, added to scenarioWeights.
const (
	scenRotating  = "hostile_rotating_callers"
	scenSlowBody  = "hostile_slow_body"
	scenWorker402 = "hostile_worker_402"
	scenForger    = "hostile_forger"
	scenFarFuture = "hostile_far_future"
)

// outAbandoned is the outcome of a slow body the client gave up on.
const outAbandoned = "abandoned body"

var hostileScenarioWeights = []struct {
	name   string
	weight int
}{
	{scenRotating, 4},
	{scenSlowBody, 2},
	{scenWorker402, 5},
	{scenForger, 4},
	{scenFarFuture, 4},
}

// scenarioTable is the workload's scenarios with their weights.
func (w *workload) scenarioTable() []struct {
	name   string
	weight int
} {
	if w.hostile == nil {
		return scenarioWeights
	}
	return append(slices.Clone(scenarioWeights), hostileScenarioWeights...)
}

// hostileWorkers serves the hostile tenants' workers over HTTP: /402
// answers 402 with a challenge of its own, /forger answers 200 with the
// gateway's headers forged. It counts the requests each gets.
type hostileWorkers struct {
	n402, nForger atomic.Int64
}

func (h *hostileWorkers) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
	w.Header().Set(hostileMarkHeader, "1")
	switch {
	case strings.HasPrefix(r.URL.Path, "/402"):
		h.n402.Add(1)
		w.Header().Set(x402.HeaderPaymentRequired, forgedMark+"e30=")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusPaymentRequired)
		_, _ = io.WriteString(w, `{"x402Version":1,"error":"pay the worker instead","accepts":[]}`)
	case strings.HasPrefix(r.URL.Path, "/forger"):
		h.nForger.Add(1)
		for _, k := range []string{
			x402.HeaderPaymentResponse, x402.HeaderXPaymentResponse, x402.HeaderPaymentRequired,
			"X-Payment-Idempotency-Key", "X-Payment-Deduped", "Settlement-Overrides",
			"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "RateLimit-Policy", "RateLimit",
			"X-Usage-Day-Remaining", "X-Spend-Day-Remaining", "X-Request-Id", "X-Tenant-Id", "Set-Cookie",
		} {
			w.Header().Set(k, forgedMark+"1")
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true,"forger":true}`)
	default:
		http.NotFound(w, r)
	}
}

// hostileMix is the state of the hostile mix in one run.
type hostileMix struct {
	workers   hostileWorkers
	base      string // base URL of hostileWorkers
	srv       *http.Server
	tenants   []*tenantSpec
	w402      map[string]bool // slugs of the tenants whose worker answers 402
	forger    map[string]bool // slugs of the tenants whose worker forges headers
	rotating  atomic.Int64    // requests sent under rotating caller ids
	mu        sync.Mutex
	leaks     []string // answers that carried a hostile worker's answer or a forged value
	slowSent  atomic.Int64
	abandoned atomic.Int64
}

// newHostileMix serves the hostile workers and makes the hostile tenants:
// a free and a paid one for each hostile worker.
func newHostileMix(prefix string) (*hostileMix, error) {
	h := &hostileMix{w402: map[string]bool{}, forger: map[string]bool{}}
	base, srv, err := serve(&h.workers)
	if err != nil {
		return nil, err
	}
	h.base, h.srv = base, srv
	for _, k := range []struct {
		kind, worker string
		set          map[string]bool
	}{{"h402", workerHostile402, h.w402}, {"hforge", workerForger, h.forger}} {
		free := &tenantSpec{Slug: prefix + "-" + k.kind + "-free", WorkerName: k.worker, Plan: "free", Directory: "data", OwnerUserID: "owner-h", profile: "hostile worker (" + k.kind + ")"}
		paid := &tenantSpec{Slug: prefix + "-" + k.kind + "-paid", WorkerName: k.worker, Plan: "pro", X402Enabled: true, PriceUSD: "0.003", Directory: "finance", OwnerUserID: "owner-h", profile: "hostile worker (" + k.kind + "), $0.003"}
		h.tenants = append(h.tenants, free, paid)
		k.set[free.Slug], k.set[paid.Slug] = true, true
	}
	return h, nil
}

// addWorkers adds the hostile workers to the -workers map.
func (h *hostileMix) addWorkers(m map[string]string) {
	m[workerHostile402] = h.base + "/402"
	m[workerForger] = h.base + "/forger"
}

func (h *hostileMix) close() { _ = h.srv.Close() }

func (h *hostileMix) leak(format string, args ...any) {
	h.mu.Lock()
	h.leaks = append(h.leaks, fmt.Sprintf(format, args...))
	h.mu.Unlock()
}

// inspect records an answer that carries a hostile worker's own answer (its
// marker header) or a value a forging worker set.
func (h *hostileMix) inspect(o observation, hd http.Header) {
	for k, vs := range hd {
		for _, v := range vs {
			if strings.Contains(v, forgedMark) {
				h.leak("%s %s: the worker's forged %s: %q reached the client (answer %d)", o.Scenario, o.Tenant, k, v, o.Status)
			}
		}
	}
	if hd.Get(hostileMarkHeader) != "" && h.w402[o.Tenant] {
		h.leak("%s %s: the worker's 402 answer reached the client as %d", o.Scenario, o.Tenant, o.Status)
	}
}

func (h *hostileMix) slugs(set map[string]bool, paid bool) []*tenantSpec {
	var out []*tenantSpec
	for _, t := range h.tenants {
		if set[t.Slug] && t.paid() == paid {
			out = append(out, t)
		}
	}
	return out
}

// hostileScenario runs one scenario of the hostile mix.
func (w *workload) hostileScenario(name string, rng *rand.Rand) {
	h := w.hostile
	if h == nil {
		return
	}
	switch name {
	case scenRotating:
		// One client, a fresh caller id per request, against the tenants
		// whose quotas and caps the invariants hold exactly.
		var targets []*tenantSpec
		for _, t := range append(slices.Clone(w.free), w.paid...) {
			if t.UsageLimit != nil || t.SpendLimit != nil {
				targets = append(targets, t)
			}
		}
		if len(targets) == 0 {
			return
		}
		t := pick(rng, targets)
		for range 6 {
			h.rotating.Add(1)
			caller := fmt.Sprintf("rot-%016x", rng.Uint64())
			if !t.paid() {
				w.send(name, t, randomPath(rng), caller, nil, "")
				continue
			}
			hd, key, ok := w.signFor(name, t, rng, caller, localfacilitator.SignOptions{})
			if !ok {
				return
			}
			w.send(name, t, randomPath(rng), caller, hd, key)
		}
	case scenSlowBody:
		t := pick(rng, append(slices.Clone(w.free), w.paid...))
		caller := w.caller(rng)
		var hd http.Header
		var key string
		if t.paid() {
			var ok bool
			if hd, key, ok = w.signFor(name, t, rng, caller, localfacilitator.SignOptions{}); !ok {
				return
			}
		}
		w.slowBody(name, t, caller, hd, key, rng.IntN(4) == 0, rng)
	case scenWorker402, scenForger:
		set := h.w402
		if name == scenForger {
			set = h.forger
		}
		paid := rng.IntN(2) == 0
		t := pick(rng, h.slugs(set, paid))
		caller := w.caller(rng)
		var hd http.Header
		var key string
		if paid {
			var ok bool
			if hd, key, ok = w.signFor(name, t, rng, caller, localfacilitator.SignOptions{}); !ok {
				return
			}
		}
		o, rh := w.send(name, t, randomPath(rng), caller, hd, key)
		h.inspect(o, rh)
	case scenFarFuture:
		if len(w.paid) == 0 {
			return
		}
		t := pick(rng, w.paid)
		caller := w.caller(rng)
		far := time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
		hd, key, ok := w.signFor(name, t, rng, caller, localfacilitator.SignOptions{ValidBefore: &far})
		if !ok {
			return
		}
		w.send(name, t, randomPath(rng), caller, hd, key)
	}
}

// signFor signs a valid payment for t (from the requirement of its
// challenge) with opts and returns the header to send and its key.
func (w *workload) signFor(scen string, t *tenantSpec, rng *rand.Rand, caller string, opts localfacilitator.SignOptions) (http.Header, string, bool) {
	req, ok := w.requirement(scen, t, rng, caller)
	if !ok {
		return nil, "", false
	}
	version := 2
	if rng.IntN(5) == 0 {
		version = 1
	}
	sp, err := pick(rng, w.signers).Sign(req, version, opts)
	if err != nil {
		w.rec.add(observation{Start: time.Now(), End: time.Now(), Tenant: t.Slug, Scenario: scen, Outcome: "sign_error", Err: err.Error()})
		return nil, "", false
	}
	return http.Header{sp.Header: {sp.Value}}, authKey(sp.Value), true
}

// slowBody POSTs to t over a raw connection that promises a body and
// trickles it a byte every 20 to 60 ms; with abandon it closes the
// connection a third of the way in. The answer (which may come before the
// body is complete: the workers do not read it) is read concurrently.
func (w *workload) slowBody(scen string, t *tenantSpec, caller string, pay http.Header, key string, abandon bool, rng *rand.Rand) {
	h := w.hostile
	o := observation{Tenant: t.Slug, Scenario: scen, Paid: pay != nil, AuthKey: key, Start: time.Now()}
	fail := func(err error) {
		o.End = time.Now()
		o.Outcome, o.Err = outConnError, err.Error()
		w.rec.add(o)
	}
	u, err := url.Parse(w.base)
	if err != nil {
		fail(err)
		return
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		fail(err)
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	body := []byte(`{"trickled":"` + strings.Repeat("x", 16) + `"}`)
	var head strings.Builder
	fmt.Fprintf(&head, "POST /t/%s%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nX-Agent-Id: %s\r\nConnection: close\r\n",
		t.Slug, randomPath(rng), u.Host, len(body), caller)
	for k, vs := range pay {
		for _, v := range vs {
			fmt.Fprintf(&head, "%s: %s\r\n", k, v)
		}
	}
	head.WriteString("\r\n")
	if _, err := io.WriteString(conn, head.String()); err != nil {
		fail(err)
		return
	}
	h.slowSent.Add(1)
	type answer struct {
		resp *http.Response
		body []byte
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			got <- answer{err: err}
			return
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		got <- answer{resp: resp, body: b, err: err}
	}()
	stop := len(body)
	if abandon {
		stop = len(body) / 3
	}
	var a *answer
trickle:
	for i := 0; i < stop; i++ {
		if _, err := conn.Write(body[i : i+1]); err != nil {
			break
		}
		select {
		case x := <-got:
			a = &x
			break trickle
		case <-time.After(time.Duration(20+rng.IntN(40)) * time.Millisecond):
		}
	}
	if abandon && a == nil {
		conn.Close()
		h.abandoned.Add(1)
		o.End = time.Now()
		o.Outcome = outAbandoned
		w.rec.add(o)
		return
	}
	if a == nil {
		x := <-got
		a = &x
	}
	o.End = time.Now()
	if a.err != nil {
		o.Outcome, o.Err = outConnError, a.err.Error()
		w.rec.add(o)
		return
	}
	o.Status = a.resp.StatusCode
	o.Deduped = a.resp.Header.Get("X-Payment-Deduped") == "true"
	o.Outcome, o.TxHash = classify(a.resp.StatusCode, a.resp.Header, a.body, o.Paid)
	w.rec.add(o)
	h.inspect(o, a.resp.Header)
}

// checks are the hostile mix's own invariants.
func (h *hostileMix) checks(in checkInput) []checkResult {
	var out []checkResult
	add := func(c checkResult) {
		if c.Skipped == "" {
			c.OK = len(c.Breaches) == 0
		}
		out = append(out, c)
	}
	// A worker's 402 is its failure: 502 tenant_worker_failure, nothing
	// settled, the worker's answer never forwarded.
	c := checkResult{Name: "hostile: a worker's 402 is answered 502 tenant_worker_failure and settles nothing"}
	n502 := 0
	for _, o := range in.Obs {
		if !h.w402[o.Tenant] {
			continue
		}
		switch {
		case o.Outcome == "502 tenant_worker_failure":
			n502++
		case o.served(), strings.HasSuffix(o.Outcome, " worker"),
			o.Outcome == outPaid, o.Outcome == outReplayed, o.Outcome == outPaidNoReceipt,
			o.Outcome == outSettleFailed, o.Outcome == outSettlePending:
			// Served, settled, or the worker's own answer forwarded.
			c.breach("request to %s (%s) at %s: %s, status %d", o.Tenant, o.Scenario, o.Start.Format(time.RFC3339Nano), o.Outcome, o.Status)
		}
	}
	for _, s := range in.Settles {
		if h.w402[s.Tenant] {
			c.breach("the facilitator settled %s for %s, whose worker answers 402", s.TxHash, s.Tenant)
		}
	}
	for _, e := range in.Ledger {
		if h.w402[e.Tenant] {
			c.breach("ledger entry %s (%s) for %s, whose worker answers 402", e.ID, e.Status, e.Tenant)
		}
	}
	if h.workers.n402.Load() == 0 || n502 == 0 {
		c.breach("the run never reached the 402 worker (%d worker calls, %d answers 502 tenant_worker_failure)", h.workers.n402.Load(), n502)
	}
	c.Detail = fmt.Sprintf("%d worker calls, %d answers 502 tenant_worker_failure", h.workers.n402.Load(), n502)
	add(c)

	// A forging worker's values never reach the client.
	c = checkResult{Name: "hostile: no forged gateway header and no worker 402 reaches the client"}
	h.mu.Lock()
	for _, l := range h.leaks {
		c.breach("%s", l)
	}
	h.mu.Unlock()
	paidForger := 0
	for _, o := range in.Obs {
		if h.forger[o.Tenant] && o.Outcome == outPaid {
			paidForger++
		}
	}
	if h.workers.nForger.Load() == 0 {
		c.breach("the run never reached the forging worker")
	}
	c.Detail = fmt.Sprintf("%d forging-worker calls, %d of them paid and settled", h.workers.nForger.Load(), paidForger)
	add(c)

	// Far-future authorizations are refused and never settled.
	c = checkResult{Name: "hostile: authorizations valid until 9999 are refused 402 and never settled"}
	far := map[string]bool{}
	refused := 0
	for _, o := range in.Obs {
		if o.Scenario != scenFarFuture || !o.Paid {
			continue
		}
		far[o.AuthKey] = true
		switch {
		case o.Outcome == outRejected:
			refused++
		case strings.HasPrefix(o.Outcome, "429 "), o.Outcome == outConnError:
		default:
			c.breach("far-future payment to %s at %s: %s, status %d", o.Tenant, o.Start.Format(time.RFC3339Nano), o.Outcome, o.Status)
		}
	}
	for _, s := range in.Settles {
		if far[s.Key] {
			c.breach("the facilitator settled far-future authorization %s (%s)", s.Key, s.TxHash)
		}
	}
	for _, e := range in.Ledger {
		if far[e.IdempotencyKey] || far[strings.SplitN(e.IdempotencyKey, "#", 2)[0]] {
			c.breach("ledger entry %s (%s) for far-future authorization %s", e.ID, e.Status, e.IdempotencyKey)
		}
	}
	if refused == 0 {
		c.breach("no far-future payment was refused 402 (%d sent)", len(far))
	}
	c.Detail = fmt.Sprintf("%d sent, %d refused 402", len(far), refused)
	add(c)

	// Slow bodies are answered; the gateway's own 5xx is 502/503/504.
	c = checkResult{Name: "hostile: trickled bodies are answered (gateway 5xx only 502/503/504)"}
	answered, paid := 0, 0
	for _, o := range in.Obs {
		if o.Scenario != scenSlowBody {
			continue
		}
		switch {
		case o.Outcome == outAbandoned:
		case o.Outcome == outConnError:
			if !overlapsKill(o, in.Kills) {
				c.breach("a trickled body to %s at %s got no answer: %s", o.Tenant, o.Start.Format(time.RFC3339Nano), o.Err)
			}
		case o.Status >= 500 && o.Status != 502 && o.Status != 503 && o.Status != 504 && !strings.HasSuffix(o.Outcome, " worker"):
			c.breach("a trickled body to %s: %s", o.Tenant, o.Outcome)
		default:
			answered++
			if o.Outcome == outPaid {
				paid++
			}
		}
	}
	if answered == 0 {
		c.breach("no trickled body was answered (%d sent, %d abandoned)", h.slowSent.Load(), h.abandoned.Load())
	}
	c.Detail = fmt.Sprintf("%d sent, %d answered (%d paid), %d abandoned; %d requests under rotating caller ids", h.slowSent.Load(), answered, paid, h.abandoned.Load(), h.rotating.Load())
	add(c)
	return out
}
