package dispatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
// read it and record what they decide on it. Everything on it is public and
// documented: stages do not leave private state here for one another.
type Exchange struct {
	// Request is the incoming request. Stages read it; the worker gets a
	// copy without the headers stages consume (see HeaderOwner).
	Request *http.Request
	// Resolution is how the tenant was found; Tenant is its tenant.
	Resolution tenant.Resolution
	Tenant     *tenant.Tenant
	// Price is what this request costs: the tenant's most specific route
	// for its method and worker path, or the tenant's own price.
	Price tenant.Priced
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
	// ClientIP is the client's address (the connection's peer, or the
	// first untrusted forwarding hop); invalid when unknown. Per-client-IP
	// limits and the analytics' caller diversity use it, since a caller
	// can assert any X-Agent-Id but not a network.
	ClientIP netip.Addr
	// Header holds headers every answer to this request carries (limit
	// headers, payment headers). Stages add to it.
	Header http.Header
	// Lifecycle is the analytics outcome; stages set it (or return an
	// *Error carrying one), and the dispatcher fills LifecycleServed or
	// LifecycleWorkerError when none did.
	Lifecycle Lifecycle
	// BilledUSD is what was actually charged, an exact decimal string
	// ("0" unless a payment settled).
	BilledUSD string
	// Payer is the verified payer address of a paid request; Scheme the
	// payment scheme it paid with.
	Payer  string
	Scheme string
	// WorkerCalled tells whether the worker was called.
	WorkerCalled bool
	// Status is the status answered; Err the error answered, if any.
	Status int
	Err    error
}

// PriceUSD is the request's effective price as an exact decimal string.
func (x *Exchange) PriceUSD() string { return x.Price.PriceUSD.String() }

// Next calls the rest of the pipeline: the later stages and the worker.
type Next func(ctx context.Context, x *Exchange) (*http.Response, error)

// Stage is one step of the pipeline. It may answer itself (return a
// response or an error without calling next), or call next and act on its
// answer. An error is rendered through the error table (ErrorResponse). A
// stage that reserved something before calling next gives it back when
// next fails before the worker ran (x.WorkerCalled is false).
//
// Stages are independent of one another: each decides from the Exchange
// (x.Price.Charges tells which requests a payment stage owns), so their
// order changes nothing but the order of their checks.
type Stage interface {
	Handle(ctx context.Context, x *Exchange, next Next) (*http.Response, error)
}

// HeaderOwner is implemented by stages that own response headers: the
// dispatcher removes every header starting with one of the returned
// (canonical) prefixes from a worker's answer, so that a worker cannot
// forge a limit or payment header.
type HeaderOwner interface {
	OwnedHeaders() []string
}

// HeaderConsumer is implemented by stages that read request headers no
// worker may see (a signed payment): the dispatcher removes them from every
// request it forwards, whatever the tenant, so that no worker can take a
// client's payment for itself.
type HeaderConsumer interface {
	ConsumedHeaders() []string
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
	// limits and quotas, payment.
	Stages []Stage
	// Events receives lifecycle events (nil: discarded).
	Events EventSink
	// Platform serves requests under /__platform/ (nil: 404 for all).
	Platform http.Handler
	// Fallback serves requests that name no tenant (neither by host nor
	// by /t/<slug>/): the platform's front page, discovery, and so on. Nil
	// answers them 404 tenant_not_found.
	Fallback http.Handler
	// Identity derives the caller identity (nil: DefaultIdentity, which
	// believes no forwarding headers).
	Identity func(r *http.Request) string
	// ClientIP derives the client's address (nil: the connection's peer;
	// see ClientAddr for a deployment behind trusted proxies).
	ClientIP func(r *http.Request) netip.Addr
	// WallClock returns the wall-clock budget of a worker call from its
	// limits (nil: DefaultWallClock).
	WallClock func(limits.Limits) time.Duration
	// MaxBodyBytes bounds a tenant request's body (zero or negative:
	// unbounded, so that workers may stream uploads; the example server
	// sets DefaultMaxBodyBytes). A larger body is answered 413
	// request_too_large, before any payment step when its length is
	// declared, else as soon as the worker reads past the bound.
	MaxBodyBytes int64
	// ReadTimeout and WriteTimeout bound, through http.ResponseController,
	// how long ServeHTTP waits for a tenant request's body and for the
	// client to take the answer, so that the handler is safe behind a
	// server that sets no timeouts (zero: DefaultReadTimeout and
	// DefaultWriteTimeout; negative: leave the server's). A server's own
	// shorter timeouts still apply.
	ReadTimeout, WriteTimeout time.Duration
	// KeepRequestID keeps a valid incoming X-Request-Id (a UUID) instead of
	// making a new one.
	KeepRequestID bool
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Logger logs failures (nil: discarded).
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultMaxBodyBytes = 10 << 20 // a sensible Config.MaxBodyBytes
	DefaultReadTimeout  = 30 * time.Second
	DefaultWriteTimeout = 2 * time.Minute
)

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
	cfg      Config
	handler  Next
	events   EventSink
	now      func() time.Time
	log      *slog.Logger
	owned    []string // response header prefixes only the gateway sets
	consumed []string // request headers no worker sees
}

var _ http.Handler = (*Dispatcher)(nil)

// gatewayHeaders are the response headers the dispatcher itself owns.
var gatewayHeaders = []string{HeaderRequestID, HeaderTenantID}

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
	if d.cfg.ClientIP == nil {
		d.cfg.ClientIP = func(r *http.Request) netip.Addr { a, _ := ClientAddr(r, nil); return a }
	}
	if d.cfg.WallClock == nil {
		d.cfg.WallClock = DefaultWallClock
	}
	if d.cfg.ReadTimeout == 0 {
		d.cfg.ReadTimeout = DefaultReadTimeout
	}
	if d.cfg.WriteTimeout == 0 {
		d.cfg.WriteTimeout = DefaultWriteTimeout
	}
	d.owned = append(d.owned, gatewayHeaders...)
	h := Next(d.fetch)
	for i := len(cfg.Stages) - 1; i >= 0; i-- {
		stage, next := cfg.Stages[i], h
		if stage == nil {
			return nil, fmt.Errorf("dispatch: Config.Stages[%d] is nil", i)
		}
		if o, ok := stage.(HeaderOwner); ok {
			for _, p := range o.OwnedHeaders() {
				d.owned = append(d.owned, http.CanonicalHeaderKey(p))
			}
		}
		if c, ok := stage.(HeaderConsumer); ok {
			for _, p := range c.ConsumedHeaders() {
				d.consumed = append(d.consumed, http.CanonicalHeaderKey(p))
			}
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
	rc := http.NewResponseController(w)
	now := time.Now()
	if d.cfg.ReadTimeout > 0 {
		_ = rc.SetReadDeadline(now.Add(d.cfg.ReadTimeout)) // unsupported writers keep the server's
	}
	if d.cfg.WriteTimeout > 0 {
		_ = rc.SetWriteDeadline(now.Add(d.cfg.WriteTimeout))
	}
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
		return d.serveHandler(d.cfg.Platform, r, rid)
	}
	res, err := d.cfg.Tenants.Load().Resolve(r.Host, r.URL.EscapedPath())
	if err != nil {
		if errors.Is(err, tenant.ErrBadRequest) {
			err = ErrBadRequest.With(err.Error(), nil)
		} else if d.cfg.Fallback != nil {
			return d.serveHandler(d.cfg.Fallback, r, rid)
		} else {
			err = ErrTenantNotFound.With("", nil)
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
		Price:      t.PriceFor(r.Method, res.Path),
		Payload:    BuildDispatchPayload(res, lim, RequestInfo{RequestID: rid, Method: r.Method, Host: r.Host, Query: r.URL.RawQuery}),
		Start:      start,
		Caller:     caller,
		CallerID:   HashCaller(caller),
		ClientIP:   d.cfg.ClientIP(r),
		Header:     make(http.Header),
		BilledUSD:  "0",
	}
	d.events.Emit(Event{Type: EventStart, Time: start, RequestID: rid, Tenant: t.Slug, Worker: t.WorkerName, Plan: t.Plan, Limits: lim, Exchange: x})
	var resp *http.Response
	if max := d.cfg.MaxBodyBytes; max > 0 && r.ContentLength > max {
		err = ErrRequestTooLarge.With(fmt.Sprintf("the request body is %d bytes, over the %d byte limit", r.ContentLength, max), nil)
	} else if !res.ByHost && r.Header.Get("Service-Worker") != "" {
		// A service worker registered from the shared host would serve
		// every later request of its scope, in the client's browser.
		err = ErrForbidden.With("service workers cannot be registered from a tenant on the shared host", nil)
	} else {
		resp, err = d.handler(ctx, x)
	}
	if err != nil && resp != nil {
		resp.Body.Close() // a stage answered both: the error wins
		resp = nil
	}
	if err == nil && resp == nil {
		err = ErrInternal.With("", errors.New("a pipeline stage returned neither a response nor an error"))
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
	ev := Event{Type: EventSuccess, Time: d.now(), RequestID: rid, Tenant: t.Slug, Worker: t.WorkerName, Plan: t.Plan, Limits: lim, Status: resp.StatusCode, Lifecycle: x.Lifecycle, Exchange: x}
	ev.Duration = ev.Time.Sub(start)
	if err != nil {
		ev.Type = EventFailure
		_, ev.Code = StatusOf(err)
	}
	d.events.Emit(ev)
	return resp
}

func (d *Dispatcher) requestID(r *http.Request) string {
	if d.cfg.KeepRequestID {
		if in := r.Header.Get(HeaderRequestID); in != "" && len(in) <= 64 {
			if id, err := uuid.Parse(in); err == nil {
				return id.String()
			}
		}
	}
	// Time-ordered (v7): stores that key usage events by request id
	// insert them at the end of their index, not at a random page.
	return uuid.Must(uuid.NewV7()).String()
}

// serveHandler answers r with h (a platform or front handler), carrying the
// request id; a nil h is 404 not_found.
func (d *Dispatcher) serveHandler(h http.Handler, r *http.Request, rid string) *http.Response {
	if h == nil {
		resp := ErrorResponse(ErrNotFound.With("no platform route "+r.URL.Path, nil), rid)
		resp.Header.Set(HeaderRequestID, rid)
		return resp
	}
	rec := newRecorder()
	if r.Header.Get(HeaderRequestID) == "" {
		r.Header.Set(HeaderRequestID, rid)
	}
	h.ServeHTTP(rec, r)
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
	out, body, err := d.outgoingRequest(ctx, x) // one clone, with the final context
	if err != nil {
		cancel()
		return nil, err
	}
	x.WorkerCalled = true
	resp, err := d.cfg.Fetcher.Fetch(ctx, out, &x.Payload)
	if body != nil && body.exceeded.Load() {
		// The body went past the cap: whatever the worker made of the cut
		// request (an answer, a failure), the request is refused, and a
		// paid one is not settled.
		if resp != nil {
			resp.Body.Close()
		}
		cancel()
		return nil, ErrRequestTooLarge.With(fmt.Sprintf("the request body is over the %d byte limit", d.cfg.MaxBodyBytes), nil)
	}
	if err != nil {
		cancel()
		return nil, classifyFetchError(ctx, err)
	}
	if resp.StatusCode < 200 {
		// An informational status is no final answer: nothing to serve,
		// nothing to charge for.
		resp.Body.Close()
		cancel()
		return nil, ErrWorkerFailure.With("", fmt.Errorf("worker %q answered %d as its final status", x.Payload.WorkerName, resp.StatusCode))
	}
	if budget.Exceeded() {
		resp.Body.Close()
		cancel()
		return nil, ErrWorkerLimitExceeded.With("", fmt.Errorf("worker %q tried more than %d subrequests", x.Payload.WorkerName, x.Payload.Limits.SubRequests))
	}
	if resp.StatusCode == http.StatusPaymentRequired {
		// A worker never takes payment itself: its 402 would be a
		// challenge to its own address, outside the ledger, the caps and
		// the platform's fees.
		resp.Body.Close()
		cancel()
		return nil, ErrWorkerFailure.With("", fmt.Errorf("worker %q answered 402; workers cannot ask for payment", x.Payload.WorkerName))
	}
	canonicalize(resp.Header)
	d.stripOwned(resp.Header)
	if !x.Resolution.ByHost {
		if !x.Tenant.Cookies {
			// Tenants under /t/<slug>/ share the platform's host and so
			// its cookies: none cross between client and worker unless
			// the tenant opted in.
			resp.Header.Del("Set-Cookie")
		}
		// Nor may a tenant on the shared host take over the origin in
		// a browser: a service worker scoped to "/" would control the
		// marketplace, every tenant and the paywall; Clear-Site-Data
		// would wipe the origin's storage.
		resp.Header.Del("Service-Worker-Allowed")
		resp.Header.Del("Clear-Site-Data")
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

func classifyFetchError(ctx context.Context, err error) error {
	if errors.Is(err, errBodyTooLarge) {
		return ErrRequestTooLarge.With("", err)
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() == context.DeadlineExceeded {
		return ErrWorkerTimeout.With("", err)
	}
	return ErrWorkerFailure.With("", err)
}

// outgoingRequest derives the request the worker gets: the incoming one
// with the worker's path, without the headers no worker may see (those the
// stages consume, the client's Forwarded, names with '_' that CGI-style
// servers merge with the gateway's own, and cookies across tenants on a
// shared host), and with its body bounded.
func (d *Dispatcher) outgoingRequest(ctx context.Context, x *Exchange) (*http.Request, *limitedBody, error) {
	in := x.Request
	out := in.Clone(ctx)
	out.RequestURI = ""
	if !x.Resolution.ByHost {
		u := *in.URL
		u.RawPath = x.Resolution.Path
		p, err := unescapePath(x.Resolution.Path)
		if err != nil {
			return nil, nil, ErrBadRequest.With("", err)
		}
		u.Path = p
		if u.RawPath == u.Path {
			u.RawPath = ""
		}
		out.URL = &u
	}
	h := out.Header
	canonicalize(h)
	for _, k := range d.consumed {
		delete(h, k)
	}
	delete(h, "Forwarded")
	// A method override would let a worker stack run another route than
	// the one the request was priced as (POST priced, GET served).
	delete(h, "X-Http-Method-Override")
	delete(h, "X-Http-Method")
	delete(h, "X-Method-Override")
	for k := range h {
		if strings.IndexByte(k, '_') >= 0 {
			delete(h, k)
		}
	}
	if !x.Resolution.ByHost && !x.Tenant.Cookies {
		delete(h, "Cookie")
	}
	var lb *limitedBody
	if max := d.cfg.MaxBodyBytes; max > 0 && out.Body != nil && out.Body != http.NoBody {
		lb = &limitedBody{rc: out.Body, left: max}
		out.Body = lb
	}
	return out, lb, nil
}

// errBodyTooLarge is what a worker reading past Config.MaxBodyBytes gets.
var errBodyTooLarge = errors.New("dispatch: request body over the gateway's limit")

type limitedBody struct {
	rc       io.ReadCloser
	left     int64
	exceeded atomic.Bool // read past the cap (a transport may read it from another goroutine)
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		var one [1]byte
		if n, _ := b.rc.Read(one[:]); n > 0 {
			b.exceeded.Store(true)
			return 0, errBodyTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

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

// canonicalize rewrites h so that every key is in canonical form, merging
// the values of keys that differ only in spelling. A worker in process (or
// a caller of Dispatch) may set raw keys such as "payment-response" that
// net/http writes as spelled; every header rule compares canonical keys.
// Two Content-Length values make the length unknown: both are dropped.
func canonicalize(h http.Header) {
	for k, vs := range h {
		if ck := http.CanonicalHeaderKey(k); ck != k {
			delete(h, k)
			h[ck] = append(h[ck], vs...)
		}
	}
	if len(h["Content-Length"]) > 1 {
		delete(h, "Content-Length")
	}
}

// stripOwned removes from a worker's answer every header only the gateway
// (or one of its stages) may set.
func (d *Dispatcher) stripOwned(h http.Header) {
	for k := range h {
		for _, p := range d.owned {
			if strings.HasPrefix(k, p) {
				delete(h, k)
				break
			}
		}
	}
}
