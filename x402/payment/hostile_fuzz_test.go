package payment_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/adapters/upstream"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/payment"
)

// This file drives the whole gateway (dispatcher, quota stage, payment
// stage over the local facilitator, memory KV and memory ledger) with a
// hostile worker: its status, headers and body come from the test input.
// The gateway must keep its own headers, never hand a client's payment to a
// worker, settle nothing for a failed answer, turn a worker's 402 into
// 502 tenant_worker_failure, and make no 5xx of its own other than
// 502/503/504 with its JSON error body.

// forgedMark starts every header value the hostile worker sets: it holds
// '~', which no value the gateway sets (numbers, UUIDs, slugs, base64,
// idempotency keys) contains.
const forgedMark = "~forged~"

// hostileMaxBody is the payment stage's bound on a buffered worker answer
// in the hostile rig: bodies of the input reach past it.
const hostileMaxBody = 4 << 10

// hostileMaxRequestBody is the dispatcher's bound on a request body in
// the hostile rig (Config.MaxBodyBytes).
const hostileMaxRequestBody = 2 << 10

// Routes of the hostile rig.
const (
	hostileRoutePaid     = iota // /t/paid/..., charges, paid with a valid payment
	hostileRouteFree            // /t/free/..., no charge, shared host (no cookies)
	hostileRouteFreeHost        // free tenant by its own host (cookies pass)
	hostileRoutes
)

// hostileStore counts the ledger writes that reach the store.
type hostileStore struct {
	ledger.Store
	settlements, audits atomic.Int64
}

func (s *hostileStore) AppendSettlement(ctx context.Context, e ledger.Entry, rec ledger.AuditRecord) (ledger.AuditRecord, error) {
	out, err := s.Store.AppendSettlement(ctx, e, rec)
	if err == nil {
		s.settlements.Add(1)
	}
	return out, err
}

func (s *hostileStore) AppendAudit(ctx context.Context, rec ledger.AuditRecord) (ledger.AuditRecord, error) {
	out, err := s.Store.AppendAudit(ctx, rec)
	if err == nil {
		s.audits.Add(1)
	}
	return out, err
}

// hostileFacilitator counts verify and settle calls.
type hostileFacilitator struct {
	x402.Facilitator
	verifies, settles atomic.Int64
}

func (f *hostileFacilitator) Verify(ctx context.Context, r x402.FacilitatorRequest) (*x402.VerifyResponse, error) {
	f.verifies.Add(1)
	return f.Facilitator.Verify(ctx, r)
}

func (f *hostileFacilitator) Settle(ctx context.Context, r x402.FacilitatorRequest) (*x402.SettleResponse, error) {
	f.settles.Add(1)
	return f.Facilitator.Settle(ctx, r)
}

// hostileAnswer is what the hostile worker answers: header keys are used
// exactly as spelled (not canonicalized), as a worker writing into its
// header map directly would.
type hostileAnswer struct {
	status int
	header http.Header
	body   []byte
}

// hostileRig is one gateway with a hostile worker. Calls are serialized
// (the fuzz engine calls a target sequentially in each process).
type hostileRig struct {
	d      *dispatch.Dispatcher
	fac    *hostileFacilitator
	store  *hostileStore
	ledger *ledger.Ledger
	signer *localfacilitator.Signer
	stage  *payment.Stage
	dir    *tenant.Directory
	owned  []string // canonical prefixes of every gateway-owned response header

	mu       sync.Mutex
	answer   hostileAnswer
	received http.Header // the request headers the worker got, as spelled
	readBody int64       // request body bytes the worker read
	readErr  error       // the error reading the body ended with
	calls    int
}

func newHostileRig(tb testing.TB) *hostileRig {
	tb.Helper()
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	rig := &hostileRig{store: &hostileStore{Store: memory.NewLedger()}}
	local, err := localfacilitator.New(localfacilitator.Config{})
	must(err)
	rig.fac = &hostileFacilitator{Facilitator: local}
	rig.ledger, err = ledger.New(rig.store, ledger.Config{})
	must(err)
	// Limits far above anything a fuzz run reaches, so every limit header
	// is set and no request is refused for its rate.
	huge := tenant.Rate{Requests: 1 << 40, WindowSeconds: 60}
	counters := memory.NewKV()
	lim, err := quota.New(counters, quota.Config{
		DraftHeaders: true,
		Plans:        map[string]quota.PlanRates{"free": {PerCaller: huge, Global: huge, PerIP: huge}},
	})
	must(err)
	rig.stage, err = payment.NewStage(payment.Config{
		Facilitator: rig.fac, KV: memory.NewKV(), Ledger: rig.ledger, Meter: lim,
		PayTo: payTo, MaxResponseBytes: hostileMaxBody,
	})
	must(err)
	rig.dir, err = tenant.ParseDirectory([]byte(`{"tenants":[
	 {"slug":"paid","workerName":"w","priceUsd":"0.01","x402Enabled":true,"ownerUserId":"owner-1",
	  "usageLimit":{"dailyRequests":1000000000000,"monthlyRequests":1000000000000},
	  "spendLimit":{"dailySpendUsd":"1000000000","monthlySpendUsd":"1000000000"}},
	 {"slug":"free","workerName":"w","hosts":["free.example"],
	  "usageLimit":{"dailyRequests":1000000000000,"monthlyRequests":1000000000000}}]}`))
	must(err)
	worker := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rig.mu.Lock()
		rig.calls++
		rig.received = r.Header.Clone()
		a := rig.answer
		rig.mu.Unlock()
		// The worker reads the whole body and, as a careless worker
		// does, answers whatever the read ended with.
		n, err := io.Copy(io.Discard, r.Body)
		rig.mu.Lock()
		rig.readBody, rig.readErr = n, err
		rig.mu.Unlock()
		for k, vs := range a.header {
			w.Header()[k] = append(w.Header()[k], vs...)
		}
		w.WriteHeader(a.status)
		_, _ = w.Write(a.body)
	})
	quotaStage := lim.Stage()
	rig.d, err = dispatch.NewDispatcher(dispatch.Config{
		Tenants: tenant.NewRegistry(rig.dir),
		Fetcher: dispatch.NewHandlerFetcher(map[string]http.Handler{"w": worker}),
		Stages:  []dispatch.Stage{quotaStage, rig.stage},
		// A request body over the bound is 413 request_too_large.
		MaxBodyBytes: hostileMaxRequestBody,
	})
	must(err)
	rig.signer, err = localfacilitator.GenerateSigner()
	must(err)
	// What the gateway owns: what its stages declare, and the names the
	// contract gives, in case a stage stops declaring one.
	for _, p := range append(append(rig.stage.OwnedHeaders(), quotaStage.OwnedHeaders()...),
		dispatch.HeaderRequestID, dispatch.HeaderTenantID,
		"X-Payment-", "Payment-Response", "Payment-Required", payment.HeaderSettlementOverrides,
		"X-Ratelimit-", "Ratelimit", "X-Usage-", "X-Spend-") {
		rig.owned = append(rig.owned, http.CanonicalHeaderKey(p))
	}
	return rig
}

// isOwned reports whether the header named k, in any case spelling, is
// one only the gateway sets.
func (rig *hostileRig) isOwned(k string) bool {
	c := http.CanonicalHeaderKey(k)
	for _, p := range rig.owned {
		if strings.HasPrefix(c, p) {
			return true
		}
	}
	return false
}

// hostileInput is one case: the route, the worker's answer, and how the
// client sends its payment.
type hostileInput struct {
	route  int
	status int
	// headers is the worker's header block, one "Name: value" per line;
	// each value is sent with forgedMark in front.
	headers string
	// overrides, when not empty, is sent as Settlement-Overrides.
	overrides string
	// bodyLen bytes of bodyByte make the worker's body.
	bodyLen  int
	bodyByte byte
	// rawCase adds the client's payment again under non-canonical
	// spellings of both payment headers (as a caller of Dispatch, or a
	// front end that does not canonicalize, may pass them).
	rawCase bool
	// payFree attaches a valid payment to a free route too.
	payFree bool
	// v1 pays with X-PAYMENT instead of PAYMENT-SIGNATURE.
	v1 bool
	// rawSpelling makes the worker set its header names exactly as
	// spelled in headers, as a worker writing into its header map
	// directly does; otherwise they are canonicalized (as Header().Set,
	// or an answer read over HTTP, does).
	rawSpelling bool
	// reqBody, when positive, makes the request a POST with a body of
	// that many bytes; chunked sends it without a declared length.
	reqBody int
	chunked bool
}

// declaredOnly, set by HOSTILE_DECLARED_BODIES=1, keeps the fuzz engine to
// request bodies of declared length, so that a local run explores past the
// bug TestHostileGatewayBugs shows.
var declaredOnly = os.Getenv("HOSTILE_DECLARED_BODIES") != ""

// hostileInputFrom maps raw fuzz values onto an input.
func hostileInputFrom(route uint8, status uint16, headers, overrides string, bodyLen uint16, bodyByte byte, flags uint8, reqBody uint16) hostileInput {
	return hostileInput{
		route:       int(route) % hostileRoutes,
		status:      100 + int(status)%500,
		headers:     headers,
		overrides:   overrides,
		bodyLen:     int(bodyLen) % (2 * hostileMaxBody),
		bodyByte:    bodyByte,
		rawCase:     flags&1 != 0,
		payFree:     flags&2 != 0,
		v1:          flags&4 != 0,
		rawSpelling: flags&8 != 0,
		reqBody:     int(reqBody) % (2 * hostileMaxRequestBody),
		chunked:     flags&16 != 0 && !declaredOnly,
	}
}

func (in hostileInput) workerAnswer() hostileAnswer {
	h := http.Header{}
	for _, line := range strings.Split(in.headers, "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			continue
		}
		if !in.rawSpelling {
			name = http.CanonicalHeaderKey(name)
		}
		h[name] = append(h[name], forgedMark+strings.TrimLeft(value, " "))
	}
	if in.overrides != "" {
		h[payment.HeaderSettlementOverrides] = append(h[payment.HeaderSettlementOverrides], forgedMark+in.overrides)
	}
	return hostileAnswer{status: in.status, header: h, body: []byte(strings.Repeat(string([]byte{in.bodyByte}), in.bodyLen))}
}

func (in hostileInput) target() string {
	switch in.route {
	case hostileRoutePaid:
		return "http://gw.local/t/paid/rows?limit=2"
	case hostileRouteFree:
		return "http://gw.local/t/free/rows?limit=2"
	default:
		return "http://free.example/rows?limit=2"
	}
}

// hostileResult is what one case did.
type hostileResult struct {
	resp                *http.Response
	body                []byte
	received            http.Header
	readBody            int64
	readErr             error
	workerCalled        bool
	settles, ledgerRows int64 // deltas
	audits, verifies    int64
	paid                bool // a valid payment was attached
}

// run sends one request for in and returns what happened.
func (rig *hostileRig) run(tb testing.TB, in hostileInput) hostileResult {
	tb.Helper()
	target := in.target()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	if in.reqBody > 0 {
		req = httptest.NewRequest(http.MethodPost, target, bytes.NewReader(bytes.Repeat([]byte{'q'}, in.reqBody)))
		if in.chunked {
			req.ContentLength = -1 // no declared length: the bound applies as the worker reads
		}
	}
	res := hostileResult{paid: in.route == hostileRoutePaid || in.payFree}
	if res.paid {
		t, _ := rig.dir.Lookup("paid")
		pr, err := rig.stage.Requirement(t, httptest.NewRequest(http.MethodGet, "http://gw.local/t/paid/rows?limit=2", nil))
		if err != nil {
			tb.Fatal(err)
		}
		version := 2
		if in.v1 {
			version = 1
		}
		sp, err := rig.signer.Sign(pr, version, localfacilitator.SignOptions{})
		if err != nil {
			tb.Fatal(err)
		}
		req.Header.Set(sp.Header, sp.Value)
		if in.rawCase {
			for _, k := range []string{"payment-signature", "PAYMENT-SIGNATURE", "x-payment", "X-PAYMENT", "x-PaYmEnT"} {
				req.Header[k] = append(req.Header[k], sp.Value)
			}
		}
	}
	rig.mu.Lock()
	rig.answer = in.workerAnswer()
	rig.received, rig.readBody, rig.readErr = nil, 0, nil
	calls := rig.calls
	rig.mu.Unlock()
	settles, rows, audits, verifies := rig.fac.settles.Load(), rig.store.settlements.Load(), rig.store.audits.Load(), rig.fac.verifies.Load()

	resp := rig.d.Dispatch(context.Background(), req)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		tb.Fatalf("reading the answer: %v", err)
	}
	res.resp, res.body = resp, body
	rig.mu.Lock()
	res.workerCalled = rig.calls != calls
	res.received = rig.received
	res.readBody, res.readErr = rig.readBody, rig.readErr
	rig.mu.Unlock()
	res.settles = rig.fac.settles.Load() - settles
	res.ledgerRows = rig.store.settlements.Load() - rows
	res.audits = rig.store.audits.Load() - audits
	res.verifies = rig.fac.verifies.Load() - verifies
	return res
}

// check asserts every rule of the gateway against a hostile worker on one
// case, and returns the first broken one.
func (rig *hostileRig) check(in hostileInput, res hostileResult) error {
	resp, body := res.resp, res.body
	a := in.workerAnswer()
	// 1. No gateway-owned header carries a value the worker set, in any
	// spelling; the dispatcher's own are there once, and its own.
	for k, vs := range resp.Header {
		if !rig.isOwned(k) {
			continue
		}
		for _, v := range vs {
			if strings.Contains(v, forgedMark) {
				return fmt.Errorf("the worker's %q: %.80q reached the client", k, v)
			}
		}
	}
	if id := headerValues(resp.Header, dispatch.HeaderRequestID); len(id) != 1 || uuid.Validate(id[0]) != nil {
		return fmt.Errorf("X-Request-Id %q: want one UUID", id)
	}
	if ten := headerValues(resp.Header, dispatch.HeaderTenantID); len(ten) != 1 || ten[0] != hostileSlug(in.route) {
		return fmt.Errorf("X-Tenant-Id %q: want %q", ten, hostileSlug(in.route))
	}
	// Cookies do not cross between a worker and a client on the shared host.
	if in.route != hostileRouteFreeHost {
		if c := headerValues(resp.Header, "Set-Cookie"); len(c) != 0 {
			return fmt.Errorf("a worker on the shared host set a cookie: %.80q", c)
		}
	}
	// One length, the true one.
	if cl := headerValues(resp.Header, "Content-Length"); len(cl) > 1 || (len(cl) == 1 && cl[0] != strconv.Itoa(len(body))) {
		return fmt.Errorf("Content-Length %.80q for a %d-byte body", cl, len(body))
	}
	// 2. No payment header, in any spelling, reached the worker.
	for k := range res.received {
		c := http.CanonicalHeaderKey(k)
		if c == "Payment-Signature" || c == "X-Payment" {
			return fmt.Errorf("the worker received the client's payment header %q", k)
		}
	}
	// 3. Nothing settled for a failed answer (or a failed gateway call).
	settledOK := in.route == hostileRoutePaid && res.workerCalled && in.status < 400 && resp.StatusCode < 400 && in.reqBody <= hostileMaxRequestBody
	if !settledOK && (res.settles != 0 || res.ledgerRows != 0 || res.audits != 0) {
		return fmt.Errorf("worker %d, answer %d: %d settle calls, %d ledger entries, %d audit records", in.status, resp.StatusCode, res.settles, res.ledgerRows, res.audits)
	}
	if in.route != hostileRoutePaid && res.settles != 0 {
		return errors.New("a free route settled a payment")
	}
	// A request body over the bound is refused 413, before any payment
	// step when its length is declared; the worker never reads past it.
	if in.reqBody > hostileMaxRequestBody {
		if res.readBody > hostileMaxRequestBody {
			return fmt.Errorf("the worker read %d bytes of the body, over the %d-byte bound", res.readBody, hostileMaxRequestBody)
		}
		if !in.chunked && (res.workerCalled || res.verifies != 0) {
			return fmt.Errorf("a declared %d-byte body reached the worker or the facilitator", in.reqBody)
		}
		return gatewayError(resp, body, http.StatusRequestEntityTooLarge, "request_too_large")
	}
	if !res.workerCalled {
		return fmt.Errorf("the worker was not called (answer %d: %.200s)", resp.StatusCode, body)
	}
	// 4. A worker's 402 is its failure, never a challenge.
	if in.status == http.StatusPaymentRequired {
		if err := gatewayError(resp, body, http.StatusBadGateway, "tenant_worker_failure"); err != nil {
			return fmt.Errorf("worker 402: %w", err)
		}
		return nil
	}
	// A paid answer too large to buffer fails unsettled.
	if in.route == hostileRoutePaid && in.bodyLen > hostileMaxBody {
		return gatewayError(resp, body, http.StatusBadGateway, "tenant_worker_failure")
	}
	// 5. Otherwise the client gets the worker's status and body; any other
	// 5xx is the gateway's own, and then 502/503/504 with its JSON body.
	if resp.StatusCode != in.status || string(body) != string(a.body) {
		if resp.StatusCode >= 500 {
			return gatewayError(resp, body, 0, "")
		}
		return fmt.Errorf("worker %d with %d bytes, answer %d with %d bytes: %.200s", in.status, len(a.body), resp.StatusCode, len(body), body)
	}
	if in.route == hostileRoutePaid && in.status < 400 {
		if res.settles != 1 || res.ledgerRows != 1 {
			return fmt.Errorf("a served paid request: %d settle calls, %d ledger entries", res.settles, res.ledgerRows)
		}
		name := x402.HeaderPaymentResponse
		if in.v1 {
			name = x402.HeaderXPaymentResponse
		}
		if v := resp.Header.Get(name); v == "" || strings.Contains(v, forgedMark) {
			return fmt.Errorf("a settled answer's %s is %.80q", name, v)
		}
	}
	return nil
}

func hostileSlug(route int) string {
	if route == hostileRoutePaid {
		return "paid"
	}
	return "free"
}

// headerValues returns the values of every key of h equal to name in any
// case spelling.
func headerValues(h http.Header, name string) []string {
	var out []string
	for k, vs := range h {
		if strings.EqualFold(k, name) {
			out = append(out, vs...)
		}
	}
	return out
}

// gatewayError checks that resp is an error the gateway made itself: a
// 502, 503 or 504 (or exactly status, when not zero) with the JSON error
// body (and code, when not empty).
func gatewayError(resp *http.Response, body []byte, status int, code string) error {
	switch {
	case status != 0 && resp.StatusCode != status:
		return fmt.Errorf("answer %d, want %d: %.200s", resp.StatusCode, status, body)
	case status == 0 && resp.StatusCode != 502 && resp.StatusCode != 503 && resp.StatusCode != 504:
		return fmt.Errorf("the gateway answered %d itself: %.200s", resp.StatusCode, body)
	}
	var e struct {
		OK        *bool  `json:"ok"`
		Error     string `json:"error"`
		Message   string `json:"message"`
		RequestID string `json:"requestId"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.OK == nil || *e.OK || e.Error == "" || e.Message == "" || e.RequestID == "" {
		return fmt.Errorf("answer %d without the JSON error body: %.200s", resp.StatusCode, body)
	}
	if code != "" && e.Error != code {
		return fmt.Errorf("answer %d %s, want %s", resp.StatusCode, e.Error, code)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return fmt.Errorf("answer %d with Content-Type %q", resp.StatusCode, ct)
	}
	return nil
}

// forgedHeaders is a worker header block forging every header the gateway
// owns, in several case spellings, with cookies.
var forgedHeaders = strings.Join([]string{
	"X-Request-Id: 00000000-0000-0000-0000-000000000000",
	"x-tenant-id: someone-else",
	"X-PAYMENT-RESPONSE: e30=",
	"payment-response: e30=",
	"Payment-Required: e30=",
	"x-payment-idempotency-key: stolen",
	"X-Payment-Deduped: true",
	"x-ratelimit-limit: 999999",
	"X-RateLimit-Remaining: 999999",
	"RateLimit-Policy: 1;w=1",
	"ratelimit: limit=1",
	"X-Usage-Day-Remaining: 999999",
	"x-spend-day-remaining: 999999",
	"Settlement-Overrides: {\"amount\":\"1\"}",
	"set-cookie: session=stolen",
	"Set-Cookie: other=1",
	"Content-Type: text/plain",
}, "\n")

// hostileSeeds are the cases the fuzz target starts from and the table
// test runs.
var hostileSeeds = []struct {
	name string
	in   hostileInput
}{
	{"paid 200 forging every owned header", hostileInput{route: hostileRoutePaid, status: 200, headers: forgedHeaders, bodyLen: 10, bodyByte: 'x'}},
	{"paid v1 200 forging every owned header", hostileInput{route: hostileRoutePaid, status: 200, headers: forgedHeaders, bodyLen: 10, bodyByte: 'x', v1: true}},
	{"paid 402 challenge from the worker", hostileInput{route: hostileRoutePaid, status: 402, headers: "PAYMENT-REQUIRED: e30=\nWWW-Authenticate: x402", bodyLen: 30, bodyByte: '{'}},
	{"free 402 challenge from the worker", hostileInput{route: hostileRouteFree, status: 402, headers: "Payment-Required: e30=", bodyLen: 3, bodyByte: 'x'}},
	{"free by host 402", hostileInput{route: hostileRouteFreeHost, status: 402}},
	{"paid 500 forging", hostileInput{route: hostileRoutePaid, status: 500, headers: forgedHeaders, bodyLen: 100, bodyByte: 'e'}},
	{"paid 404", hostileInput{route: hostileRoutePaid, status: 404, headers: "x-payment-response: e30="}},
	{"paid 400 with an override", hostileInput{route: hostileRoutePaid, status: 400, overrides: `{"amount":"0"}`}},
	{"paid 201 with an override of zero", hostileInput{route: hostileRoutePaid, status: 201, overrides: `{"amount":"0"}`, bodyLen: 5, bodyByte: 'y'}},
	{"paid 200 with a garbage override", hostileInput{route: hostileRoutePaid, status: 200, overrides: "\x00$-1%", bodyLen: 1, bodyByte: 'z'}},
	{"paid 200 with a percent override", hostileInput{route: hostileRoutePaid, status: 200, overrides: `{"amount":"150%"}`}},
	{"paid 599", hostileInput{route: hostileRoutePaid, status: 599, bodyLen: 7, bodyByte: '!'}},
	{"paid 200 over the body bound", hostileInput{route: hostileRoutePaid, status: 200, bodyLen: hostileMaxBody + 1, bodyByte: 'b'}},
	{"paid 500 over the body bound", hostileInput{route: hostileRoutePaid, status: 500, bodyLen: hostileMaxBody + 100, bodyByte: 'b'}},
	{"paid 200 at the body bound", hostileInput{route: hostileRoutePaid, status: 200, bodyLen: hostileMaxBody, bodyByte: 'b'}},
	{"paid 200 with a huge forged header", hostileInput{route: hostileRoutePaid, status: 200, headers: "X-Payment-Response: " + strings.Repeat("A", 64<<10)}},
	{"free 200 with a huge header", hostileInput{route: hostileRouteFree, status: 200, headers: "X-Big: " + strings.Repeat("A", 64<<10)}},
	{"free 200 forging every owned header", hostileInput{route: hostileRouteFree, status: 200, headers: forgedHeaders, bodyLen: 10, bodyByte: 'x'}},
	{"free by host 200 forging, cookies allowed", hostileInput{route: hostileRouteFreeHost, status: 200, headers: forgedHeaders}},
	{"free 200 paid anyway", hostileInput{route: hostileRouteFree, status: 200, payFree: true}},
	{"free 503 paid anyway with v1", hostileInput{route: hostileRouteFree, status: 503, payFree: true, v1: true}},
	{"paid 302 redirect", hostileInput{route: hostileRoutePaid, status: 302, headers: "Location: http://evil.example/"}},
	{"paid 204", hostileInput{route: hostileRoutePaid, status: 204}},
	{"paid 429 with Retry-After", hostileInput{route: hostileRoutePaid, status: 429, headers: "Retry-After: 1\nX-RateLimit-Reset: 0"}},
	{"free 504", hostileInput{route: hostileRouteFree, status: 504}},
	{"paid 100 as a final status", hostileInput{route: hostileRoutePaid, status: 100, bodyLen: 3, bodyByte: 'c'}},
	{"free 101 as a final status", hostileInput{route: hostileRouteFree, status: 101}},
	// Raw spellings (found by this fuzz target: until 402b6e6 the
	// dispatcher matched header names as the map spelled them).
	{"paid 200 forging every owned header in raw spellings", hostileInput{route: hostileRoutePaid, status: 200, headers: forgedHeaders, bodyLen: 10, bodyByte: 'x', rawSpelling: true}},
	{"paid 404 forging the payment response in lower case", hostileInput{route: hostileRoutePaid, status: 404, headers: "x-payment-response: e30=", rawSpelling: true}},
	{"free 200 forging X-RateLimit-Reset as the IETF spells it", hostileInput{route: hostileRouteFree, status: 200, headers: "X-RateLimit-Reset: 0", rawSpelling: true}},
	{"free 200 setting a lower-case cookie on the shared host", hostileInput{route: hostileRouteFree, status: 200, headers: "set-cookie: session=stolen", rawSpelling: true}},
	{"paid 200, raw-cased payment headers from the client", hostileInput{route: hostileRoutePaid, status: 200, rawCase: true}},
	{"free 200, raw-cased payment headers from the client", hostileInput{route: hostileRouteFree, status: 200, rawCase: true, payFree: true}},
	{"paid 200 with a body at the bound", hostileInput{route: hostileRoutePaid, status: 200, reqBody: hostileMaxRequestBody}},
	{"paid 200 with a declared body over the bound", hostileInput{route: hostileRoutePaid, status: 200, reqBody: hostileMaxRequestBody + 1}},
	{"free 200 with a declared body over the bound", hostileInput{route: hostileRouteFree, status: 200, reqBody: hostileMaxRequestBody + 1}},
	{"paid 200 with a chunked body under the bound", hostileInput{route: hostileRoutePaid, status: 200, reqBody: 100, chunked: true}},
	{"free 200 with a second, lower-case Content-Length", hostileInput{route: hostileRouteFree, status: 200, headers: "content-length: 0", bodyLen: 10, bodyByte: 'x', rawSpelling: true}},
}

// hostileBugSeeds break a rule today (see TestHostileGatewayBugs); they
// stay out of the fuzz seed corpus.
var hostileBugSeeds = []struct {
	name string
	in   hostileInput
}{
	{"paid 200 with a chunked body over the bound", hostileInput{route: hostileRoutePaid, status: 200, reqBody: hostileMaxRequestBody + 1, chunked: true}},
	{"free 200 with a chunked body over the bound", hostileInput{route: hostileRouteFree, status: 200, reqBody: hostileMaxRequestBody + 100, chunked: true}},
	{"paid 500 with a chunked body over the bound", hostileInput{route: hostileRoutePaid, status: 500, reqBody: 3 * hostileMaxRequestBody / 2, chunked: true}},
}

// TestHostileGatewayBugs fails until the dispatcher is fixed.
//
// Bug: Config.MaxBodyBytes promises that a body over the bound is answered
// 413 request_too_large "as soon as the worker reads past the bound" when
// its length is not declared. The worker reading past it gets an error
// from the body (errBodyTooLarge), but an in-process worker that ignores
// it (and possibly an HTTP upstream that answers before reading it all)
// answers as it likes, and the dispatcher forwards that answer: a 200 is
// served, and on a paid route settled, for a request the gateway had to
// refuse; the client pays for an answer computed on a truncated body.
//
// Fix (dispatch): have limitedBody remember that it was read past the
// bound, and in Dispatcher.fetch, after the Fetcher returns an answer,
// close it and return ErrRequestTooLarge when it was; the payment stage
// then settles nothing (the error comes back from next).
func TestHostileGatewayBugs(t *testing.T) {
	t.Parallel()
	rig := newHostileRig(t)
	for _, c := range hostileBugSeeds {
		res := rig.run(t, c.in)
		if err := rig.check(c.in, res); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

func TestHostileWorkerSeeds(t *testing.T) {
	t.Parallel()
	rig := newHostileRig(t)
	for _, c := range hostileSeeds {
		res := rig.run(t, c.in)
		if err := rig.check(c.in, res); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// FuzzHostileWorker runs arbitrary worker answers (status 100..599,
// arbitrary header blocks in any case spelling, Settlement-Overrides,
// bodies up to twice the paid bound) through the gateway, on the paid
// tenant with a fresh valid payment and on a free tenant (by path and by
// host), and checks every rule of hostileRig.check.
func FuzzHostileWorker(f *testing.F) {
	rig := newHostileRig(f)
	for _, c := range hostileSeeds {
		in := c.in
		var flags uint8
		if in.rawCase {
			flags |= 1
		}
		if in.payFree {
			flags |= 2
		}
		if in.v1 {
			flags |= 4
		}
		if in.rawSpelling {
			flags |= 8
		}
		if in.chunked {
			flags |= 16
		}
		if len(in.headers) > 1<<10 {
			continue // the huge-header seeds stay in the table test
		}
		f.Add(uint8(in.route), uint16(in.status-100), in.headers, in.overrides, uint16(in.bodyLen), in.bodyByte, flags, uint16(in.reqBody))
	}
	f.Fuzz(func(t *testing.T, route uint8, status uint16, headers, overrides string, bodyLen uint16, bodyByte byte, flags uint8, reqBody uint16) {
		in := hostileInputFrom(route, status, headers, overrides, bodyLen, bodyByte, flags, reqBody)
		res := rig.run(t, in)
		if err := rig.check(in, res); err != nil {
			t.Fatal(err)
		}
	})
}

// TestHostileHeaderSpellingOverHTTP is the regression test of a bug this
// file found: the dispatcher matched header names as the map spelled them,
// so a worker writing "x-payment-response" or "set-cookie" into its header
// map directly (in process, behind dispatch.HandlerFetcher) had net/http
// write them to the client as spelled, and a caller of Dispatch whose
// request carried "payment-signature" had it forwarded to the worker. The
// seeds "... raw ..." cover it through Dispatch; this is what a client
// reads over HTTP.
func TestHostileHeaderSpellingOverHTTP(t *testing.T) {
	t.Parallel()
	rig := newHostileRig(t)
	// The same over the wire: what a client reads.
	srv := httptest.NewServer(rig.d)
	defer srv.Close()
	in := hostileInput{route: hostileRouteFree, status: 200, headers: "x-payment-response: e30=\nset-cookie: session=stolen", rawSpelling: true}
	rig.mu.Lock()
	rig.answer = in.workerAnswer()
	rig.mu.Unlock()
	resp, err := srv.Client().Get(srv.URL + "/t/free/rows")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, k := range []string{"X-Payment-Response", "Set-Cookie"} {
		if v := resp.Header.Get(k); v != "" {
			t.Errorf("over HTTP the client reads the worker's %s: %q", k, v)
		}
	}
}

// TestHostileGatewayBugsUpstream fails until the dispatcher (or the HTTP
// upstream fetcher) is fixed.
//
// Bug: through adapters/upstream, a request body of undeclared length over
// Config.MaxBodyBytes is answered 502 tenant_worker_failure instead of the
// documented 413 request_too_large, whether the worker reads the body or
// not: the transport's error does not wrap the dispatcher's body error, so
// classifyFetchError never sees it. The client is told the worker failed
// when its own request was too large. (Nothing is settled: 502 is an
// error.)
//
// Fix: the limitedBody flag of TestHostileGatewayBugs, checked in
// Dispatcher.fetch when the Fetcher returns an error too, before
// classifyFetchError.
func TestHostileGatewayBugsUpstream(t *testing.T) {
	t.Parallel()
	for _, reads := range []bool{false, true} {
		worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if reads {
				_, _ = io.Copy(io.Discard, r.Body)
			}
			_, _ = w.Write([]byte("ok"))
		}))
		defer worker.Close()
		f, err := upstream.New(upstream.Config{Workers: map[string]string{"w": worker.URL}})
		require.NoError(t, err)
		dir, err := tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"free","workerName":"w"}]}`))
		require.NoError(t, err)
		d, err := dispatch.NewDispatcher(dispatch.Config{Tenants: tenant.NewRegistry(dir), Fetcher: f, MaxBodyBytes: hostileMaxRequestBody})
		require.NoError(t, err)
		req := httptest.NewRequest(http.MethodPost, "http://gw.local/t/free/rows", bytes.NewReader(make([]byte, 50*hostileMaxRequestBody)))
		req.ContentLength = -1
		resp := d.Dispatch(context.Background(), req)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := gatewayError(resp, body, http.StatusRequestEntityTooLarge, "request_too_large"); err != nil {
			t.Errorf("worker reads the body: %v: %v", reads, err)
		}
	}
}
