package dispatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/402claw/dispatcher/limits"
	"github.com/402claw/dispatcher/tenant"
)

// Header names the dispatcher sets on every tenant response.
const (
	HeaderRequestID = "X-Request-Id"
	HeaderTenantID  = "X-Tenant-Id"
)

// PlatformPrefix is the path prefix of the platform's own routes; requests
// under it never reach a tenant.
const PlatformPrefix = "/__platform/"

// Fetcher forwards one request to a tenant's worker. req is the outgoing
// request: its URL path is the worker's path (the /t/<slug> prefix
// stripped), its context carries the wall-clock deadline and the subrequest
// Budget. p names the worker and its limits.
//
// Implementations return errors wrapping ErrWorkerNotFound,
// ErrWorkerLimitExceeded, ErrWorkerFailure or ErrWorkerTimeout; anything
// else is treated as ErrWorkerFailure. The caller closes the response body.
type Fetcher interface {
	Fetch(ctx context.Context, req *http.Request, p *Payload) (*http.Response, error)
}

// Exchange is one tenant request on its way through the pipeline. Stages
// read it and record what they decide on it.
type Exchange struct {
	// Request is the incoming request.
	Request *http.Request
	// Resolution is how the tenant was found; Tenant is its tenant.
	Resolution tenant.Resolution
	Tenant     *tenant.Tenant
	// Payload is what the worker is told: request id, worker, limits.
	Payload Payload
	// Start is when the request arrived.
	Start time.Time
	// Caller is the caller identity of DESIGN section 6 (hashed when it
	// came from a secret, such as an API key); CallerID is its SHA-256
	// hash, the only form stored anywhere. A stage may replace both (the
	// payment stage uses the verified payer).
	Caller   string
	CallerID string
	// Header holds headers every answer to this request carries (limit
	// headers, payment headers). Stages add to it.
	Header http.Header
	// Lifecycle is the analytics outcome; stages set it, and the dispatcher
	// fills "served" or "worker_error" when none did.
	Lifecycle string
	// PriceUSD and BilledUSD are exact decimal strings for analytics: the
	// tenant's price and what was actually charged.
	PriceUSD  string
	BilledUSD string
	// Payer is the verified payer address of a paid request.
	Payer string
	// WorkerCalled tells whether the worker was called.
	WorkerCalled bool
	// SettlementFailed is set by a payment stage when the worker answered
	// but the payment could not be settled: the client is answered 402 and
	// charged nothing, so stages give back what the request reserved (its
	// usage quota unit) as if the worker had not run.
	SettlementFailed bool
	// Status is the status answered; Err the error answered, if any.
	Status int
	Err    error

	values  map[any]any
	refunds []func(context.Context)
}

// OnRefund registers fn to give back something a stage reserved, should a
// later decision (a failed settlement) leave the request uncharged after
// its worker ran. Stages nested inside a payment stage use it: they return
// before the payment is settled.
func (x *Exchange) OnRefund(fn func(context.Context)) { x.refunds = append(x.refunds, fn) }

// Refund marks the request as not charged after its worker ran
// (SettlementFailed) and runs the registered give-backs, once.
func (x *Exchange) Refund(ctx context.Context) {
	x.SettlementFailed = true
	fns := x.refunds
	x.refunds = nil
	for _, fn := range fns {
		fn(ctx)
	}
}

// SetValue stores a stage's private value on the exchange.
func (x *Exchange) SetValue(key, value any) {
	if x.values == nil {
		x.values = make(map[any]any)
	}
	x.values[key] = value
}

// Value returns a value stored with SetValue.
func (x *Exchange) Value(key any) any { return x.values[key] }

// Next calls the rest of the pipeline: the later stages and the worker.
type Next func(ctx context.Context, x *Exchange) (*http.Response, error)

// Stage is one step of the pipeline. It may answer itself (return a
// response or an error without calling next), or call next and act on its
// answer. An error is rendered through the error table; a HeaderError adds
// its headers. A stage that reserved something before calling next gives it
// back when next fails before the worker ran (x.WorkerCalled is false).
type Stage interface {
	Handle(ctx context.Context, x *Exchange, next Next) (*http.Response, error)
}

// StageFunc adapts a function to a Stage.
type StageFunc func(ctx context.Context, x *Exchange, next Next) (*http.Response, error)

// Handle calls f.
func (f StageFunc) Handle(ctx context.Context, x *Exchange, next Next) (*http.Response, error) {
	return f(ctx, x, next)
}

// Config configures a Dispatcher. Tenants and Fetcher are required; every
// other field has a working zero value.
type Config struct {
	// Tenants holds the directory in force; swap it while serving.
	Tenants *tenant.Registry
	// Fetcher forwards requests to workers.
	Fetcher Fetcher
	// Policy combines plans and tenant overrides (zero: default plans,
	// overrides only lower).
	Policy limits.Policy
	// Stages run in order between resolution and the worker call: rate
	// limits, payment, quotas.
	Stages []Stage
	// Events receives lifecycle events (nil: discarded).
	Events EventSink
	// Platform serves requests under /__platform/ (nil: 404 for all).
	Platform http.Handler
	// Identity derives the caller identity (nil: DefaultIdentity, which
	// believes no forwarding headers).
	Identity func(r *http.Request) string
	// WallClock returns the wall-clock budget of a worker call from its
	// limits (nil: DefaultWallClock).
	WallClock func(limits.Limits) time.Duration
	// KeepRequestID keeps a valid incoming X-Request-Id (a UUID) instead of
	// making a new one.
	KeepRequestID bool
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Logger logs failures (nil: discarded).
	Logger *slog.Logger
}

// DefaultWallClockFactor is how many milliseconds of wall-clock time a
// worker call gets per millisecond of its CPU budget. Go cannot meter CPU
// time per goroutine, and a worker waiting on I/O uses far more wall time
// than CPU, so the CPU budget becomes a generous wall-clock one: 5 s on the
// free plan, 20 s on pro, 60 s on enterprise.
const DefaultWallClockFactor = 100

// DefaultWallClock is the default wall-clock budget of a worker call.
func DefaultWallClock(l limits.Limits) time.Duration {
	cpu := l.CPUMs
	if cpu <= 0 {
		cpu = 50
	}
	return time.Duration(cpu) * DefaultWallClockFactor * time.Millisecond
}

// Dispatcher is the gateway's request pipeline as an http.Handler. It is
// safe for concurrent use.
type Dispatcher struct {
	cfg     Config
	handler Next
	events  EventSink
	now     func() time.Time
	log     *slog.Logger
}

var _ http.Handler = (*Dispatcher)(nil)

// NewDispatcher validates cfg and builds the pipeline.
func NewDispatcher(cfg Config) (*Dispatcher, error) {
	if cfg.Tenants == nil {
		return nil, errors.New("dispatch: Config.Tenants is required")
	}
	if cfg.Fetcher == nil {
		return nil, errors.New("dispatch: Config.Fetcher is required")
	}
	d := &Dispatcher{cfg: cfg, events: cfg.Events, now: cfg.Now, log: cfg.Logger}
	if d.events == nil {
		d.events = discardSink{}
	}
	if d.now == nil {
		d.now = time.Now
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.cfg.Identity == nil {
		d.cfg.Identity = DefaultIdentity
	}
	if d.cfg.WallClock == nil {
		d.cfg.WallClock = DefaultWallClock
	}
	h := Next(d.fetch)
	for i := len(cfg.Stages) - 1; i >= 0; i-- {
		stage, next := cfg.Stages[i], h
		if stage == nil {
			return nil, fmt.Errorf("dispatch: Config.Stages[%d] is nil", i)
		}
		h = func(ctx context.Context, x *Exchange) (*http.Response, error) {
			return stage.Handle(ctx, x, next)
		}
	}
	d.handler = h
	return d, nil
}

// ServeHTTP dispatches r and writes the answer, streaming the worker's body.
func (d *Dispatcher) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	resp := d.Dispatch(r.Context(), r)
	defer resp.Body.Close()
	dst := w.Header()
	for k, vs := range resp.Header {
		dst[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	if r.Method == http.MethodHead {
		return
	}
	buf := copyBufPool.Get().(*[]byte)
	_, _ = io.CopyBuffer(w, resp.Body, *buf)
	copyBufPool.Put(buf)
}

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// Dispatch runs the pipeline for r and returns the answer. It is the
// runtime-agnostic entry point: every outcome, errors included, is a
// response (errors rendered through the error table). The caller closes the
// body.
func (d *Dispatcher) Dispatch(ctx context.Context, r *http.Request) *http.Response {
	start := d.now()
	rid := d.requestID(r)
	if strings.HasPrefix(r.URL.Path, PlatformPrefix) || r.URL.Path+"/" == PlatformPrefix {
		return d.platform(r, rid)
	}
	res, err := d.cfg.Tenants.Load().Resolve(r.Host, r.URL.EscapedPath())
	if err != nil {
		if errors.Is(err, tenant.ErrBadRequest) {
			err = fmt.Errorf("%w: %v", ErrBadRequest, err)
		} else {
			err = fmt.Errorf("%w: %v", ErrTenantNotFound, err)
		}
		resp := ErrorResponse(err, rid)
		resp.Header.Set(HeaderRequestID, rid)
		return resp
	}
	t := res.Tenant
	lim := d.cfg.Policy.Resolve(t.Plan, t.Limits)
	caller := d.cfg.Identity(r)
	x := &Exchange{
		Request:    r,
		Resolution: res,
		Tenant:     t,
		Payload:    BuildDispatchPayload(res, lim, RequestInfo{RequestID: rid, Method: r.Method, Host: r.Host, Query: r.URL.RawQuery}),
		Start:      start,
		Caller:     caller,
		CallerID:   HashCaller(caller),
		Header:     make(http.Header),
		PriceUSD:   t.PriceUSD.String(),
		BilledUSD:  "0",
	}
	d.events.Emit(Event{Type: EventStart, Time: start, RequestID: rid, Tenant: t.Slug, Worker: t.WorkerName, Plan: t.Plan, Limits: lim, Exchange: x})
	resp, err := d.handler(ctx, x)
	if err != nil && resp != nil {
		resp.Body.Close() // a stage answered both: the error wins
		resp = nil
	}
	if err == nil && resp == nil {
		err = fmt.Errorf("%w: a pipeline stage returned neither a response nor an error", ErrInternal)
	}
	if err != nil {
		x.Err = err
		resp = ErrorResponse(err, rid)
		if status, _ := StatusOf(err); status >= 500 {
			d.log.Warn("dispatch failed", "requestId", rid, "tenant", t.Slug, "worker", t.WorkerName, "err", err)
		}
	}
	// The gateway's own headers (limits, payment) win over anything of
	// the same name.
	for k, vs := range x.Header {
		resp.Header[k] = vs
	}
	ids := []string{rid, t.Slug} // one allocation for both values
	resp.Header[HeaderRequestID] = ids[0:1:1]
	resp.Header[HeaderTenantID] = ids[1:2:2]
	x.Status = resp.StatusCode
	if x.Lifecycle == "" {
		x.Lifecycle = defaultLifecycle(x)
	}
	ev := Event{Type: EventSuccess, Time: d.now(), RequestID: rid, Tenant: t.Slug, Worker: t.WorkerName, Plan: t.Plan, Limits: lim, Status: resp.StatusCode, Exchange: x}
	ev.Duration = ev.Time.Sub(start)
	if err != nil {
		ev.Type = EventFailure
		_, ev.Code = StatusOf(err)
	}
	d.events.Emit(ev)
	return resp
}

// Analytics lifecycles the dispatcher itself assigns (see metrics for all).
const (
	LifecycleServed      = "served"
	LifecycleWorkerError = "worker_error"
)

func defaultLifecycle(x *Exchange) string {
	if x.Err != nil {
		_, code := StatusOf(x.Err)
		switch code {
		case "rate_limited", "usage_quota_exceeded", "spend_cap_exceeded":
			return code
		case "invalid_payment", "idempotency_key_in_use", "idempotency_key_reused":
			return "payment_invalid" // the request's payment, not the tenant, is at fault
		}
		return LifecycleWorkerError
	}
	if x.Status >= 500 {
		return LifecycleWorkerError
	}
	return LifecycleServed
}

func (d *Dispatcher) requestID(r *http.Request) string {
	if d.cfg.KeepRequestID {
		if in := r.Header.Get(HeaderRequestID); in != "" && len(in) <= 64 {
			if id, err := uuid.Parse(in); err == nil {
				return id.String()
			}
		}
	}
	return uuid.NewString()
}

func (d *Dispatcher) platform(r *http.Request, rid string) *http.Response {
	if d.cfg.Platform == nil {
		resp := ErrorResponse(fmt.Errorf("%w: no platform route %s", &Error{"not_found", "not found"}, r.URL.Path), rid)
		resp.Header.Set(HeaderRequestID, rid)
		return resp
	}
	rec := newRecorder()
	if r.Header.Get(HeaderRequestID) == "" {
		r.Header.Set(HeaderRequestID, rid)
	}
	d.cfg.Platform.ServeHTTP(rec, r)
	resp := rec.response()
	if resp.Header.Get(HeaderRequestID) == "" {
		resp.Header.Set(HeaderRequestID, rid)
	}
	return resp
}

// fetch is the last step: the worker call under the request's limits.
func (d *Dispatcher) fetch(ctx context.Context, x *Exchange) (*http.Response, error) {
	ctx, budget := withNewBudget(ctx, x.Payload.Limits.SubRequests)
	ctx, cancel := context.WithTimeout(ctx, d.cfg.WallClock(x.Payload.Limits))
	out, err := outgoingRequest(ctx, x) // one clone, with the final context
	if err != nil {
		cancel()
		return nil, err
	}
	x.WorkerCalled = true
	resp, err := d.cfg.Fetcher.Fetch(ctx, out, &x.Payload)
	if err != nil {
		cancel()
		return nil, classifyFetchError(ctx, err)
	}
	stripGatewayHeaders(resp.Header)
	if budget.Exceeded() {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("%w: worker %q tried more than %d subrequests", ErrWorkerLimitExceeded, x.Payload.WorkerName, x.Payload.Limits.SubRequests)
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

func classifyFetchError(ctx context.Context, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("%w: %v", ErrWorkerTimeout, err)
	}
	return fmt.Errorf("%w: %v", ErrWorkerFailure, err)
}

// outgoingRequest derives the request the worker gets: the incoming one
// with the worker's path.
func outgoingRequest(ctx context.Context, x *Exchange) (*http.Request, error) {
	in := x.Request
	out := in.Clone(ctx)
	out.RequestURI = ""
	if !x.Resolution.ByHost {
		u := *in.URL
		u.RawPath = x.Resolution.Path
		p, err := unescapePath(x.Resolution.Path)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
		u.Path = p
		if u.RawPath == u.Path {
			u.RawPath = ""
		}
		out.URL = &u
	}
	return out, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
	once   sync.Once
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.once.Do(c.cancel)
	return err
}

// bytesBody is an in-memory response body.
type bytesBody struct {
	*bytes.Reader
	b []byte
}

func (bytesBody) Close() error { return nil }

func newResponse(status int, h http.Header, body []byte) *http.Response {
	return &http.Response{
		StatusCode:    status,
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          &bytesBody{Reader: bytes.NewReader(body), b: body},
		ContentLength: int64(len(body)),
	}
}

// NewResponse returns an in-memory response, for stages that answer
// themselves (a 402 challenge, a replayed response).
func NewResponse(status int, h http.Header, body []byte) *http.Response {
	if h == nil {
		h = make(http.Header)
	}
	return newResponse(status, h, body)
}

// gatewayHeaderPrefixes name the headers only the gateway may set on a
// tenant response: a worker cannot forge limit or payment headers.
var gatewayHeaderPrefixes = []string{"X-Ratelimit-", "Ratelimit", "X-Usage-", "X-Spend-", "X-Payment-", "Payment-Response", "Payment-Required", "X-Request-Id", "X-Tenant-Id"}

func stripGatewayHeaders(h http.Header) {
	for k := range h {
		for _, p := range gatewayHeaderPrefixes {
			if strings.HasPrefix(k, p) {
				delete(h, k)
				break
			}
		}
	}
}
