package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/402claw/dispatcher/dispatch"
)

// Header names the fetcher sets on the outgoing request, besides the
// dispatcher's X-Request-Id and X-Tenant-Id.
const (
	HeaderCPUMs            = "X-Dispatch-Cpu-Ms"
	HeaderSubrequests      = "X-Dispatch-Subrequests"
	HeaderForwardedFor     = "X-Forwarded-For"
	HeaderForwardedHost    = "X-Forwarded-Host"
	HeaderForwardedProto   = "X-Forwarded-Proto"
	HeaderLimitExceeded    = "X-Dispatch-Limit-Exceeded"
	dispatchHeaderPrefix   = "X-Dispatch-"
	defaultMaxIdlePerHost  = 512
	defaultMaxIdle         = 2048
	defaultDialTimeout     = 5 * time.Second
	defaultKeepAlive       = 30 * time.Second
	defaultTLSHandshake    = 5 * time.Second
	defaultIdleConnTimeout = 90 * time.Second
	// defaultResponseHeaderTimeout is the longest wall-clock budget of the
	// default plans (enterprise, 600 ms CPU x 100): the dispatcher's
	// context deadline is normally the tighter bound.
	defaultResponseHeaderTimeout = 60 * time.Second
	defaultBufferSize            = 32 << 10
)

// TransportConfig tunes the transport NewTransport builds. Zero fields take
// the defaults named on each.
type TransportConfig struct {
	// MaxIdleConnsPerHost is how many idle connections are kept per worker
	// host (default 512, enough for hundreds of concurrent clients).
	MaxIdleConnsPerHost int
	// MaxIdleConns bounds idle connections over all workers (default 2048).
	MaxIdleConns int
	// MaxConnsPerHost bounds all connections to one worker host (default 0:
	// no bound).
	MaxConnsPerHost int
	// DialTimeout bounds connecting to a worker (default 5 s).
	DialTimeout time.Duration
	// TLSHandshakeTimeout bounds the TLS handshake (default 5 s).
	TLSHandshakeTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the worker's response
	// headers after the request was written (default 60 s; the
	// dispatcher's wall-clock deadline usually ends the wait sooner).
	ResponseHeaderTimeout time.Duration
	// IdleConnTimeout closes connections idle this long (default 90 s).
	IdleConnTimeout time.Duration
	// TLSClientConfig configures TLS to https workers (nil: defaults).
	TLSClientConfig *tls.Config
}

// NewTransport returns an http.Transport tuned for forwarding to workers:
// large idle pools so that concurrent clients reuse connections, bounded
// dial, TLS and response-header timeouts, 32 KiB I/O buffers for streaming,
// no proxy from the environment (workers are internal services) and no
// transparent compression.
func NewTransport(c TransportConfig) *http.Transport {
	def := func(v, d time.Duration) time.Duration {
		if v <= 0 {
			return d
		}
		return v
	}
	idlePerHost, idle := c.MaxIdleConnsPerHost, c.MaxIdleConns
	if idlePerHost <= 0 {
		idlePerHost = defaultMaxIdlePerHost
	}
	if idle <= 0 {
		idle = max(defaultMaxIdle, idlePerHost)
	}
	dialer := &net.Dialer{Timeout: def(c.DialTimeout, defaultDialTimeout), KeepAlive: defaultKeepAlive}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          idle,
		MaxIdleConnsPerHost:   idlePerHost,
		MaxConnsPerHost:       c.MaxConnsPerHost,
		IdleConnTimeout:       def(c.IdleConnTimeout, defaultIdleConnTimeout),
		TLSHandshakeTimeout:   def(c.TLSHandshakeTimeout, defaultTLSHandshake),
		ResponseHeaderTimeout: def(c.ResponseHeaderTimeout, defaultResponseHeaderTimeout),
		ExpectContinueTimeout: time.Second,
		TLSClientConfig:       c.TLSClientConfig,
		DisableCompression:    true,
		WriteBufferSize:       defaultBufferSize,
		ReadBufferSize:        defaultBufferSize,
	}
}

// Config configures a Fetcher. Only Workers is usually set.
type Config struct {
	// Workers maps worker names to base URLs (http or https, with an
	// optional path prefix and query).
	Workers map[string]string
	// Transport sends the requests (nil: NewTransport(TransportConfig{})).
	// It is shared by all workers, so connections are reused per host.
	Transport http.RoundTripper
	// Fallback serves workers that are not in the table (nil: they are
	// dispatch.ErrWorkerNotFound). The example server uses it to mix HTTP
	// workers with in-process ones.
	Fallback dispatch.Fetcher
	// PreserveHost sends the client's Host header to the worker instead of
	// the worker's own host.
	PreserveHost bool
	// TrustForwarded keeps incoming X-Forwarded-Host and X-Forwarded-Proto
	// headers: set it only when the gateway sits behind a proxy that sets
	// them. X-Forwarded-For is always appended to, never replaced.
	TrustForwarded bool
}

// target is one worker's parsed base URL.
type target struct {
	scheme, host string
	// path and escPath are the base path, unescaped and escaped, without
	// a trailing slash.
	path, escPath string
	query         string
}

// Fetcher forwards requests to HTTP workers. It is safe for concurrent use,
// and its worker table can be swapped while serving (SetWorkers). Make one
// with New; the zero Fetcher is not usable.
type Fetcher struct {
	table          atomic.Pointer[map[string]*target]
	rt             http.RoundTripper
	ownTransport   *http.Transport
	fallback       dispatch.Fetcher
	preserveHost   bool
	trustForwarded bool
}

var _ dispatch.Fetcher = (*Fetcher)(nil)

// New validates cfg and returns a Fetcher. A bad worker URL is an error
// naming the worker.
func New(cfg Config) (*Fetcher, error) {
	f := &Fetcher{
		rt:             cfg.Transport,
		fallback:       cfg.Fallback,
		preserveHost:   cfg.PreserveHost,
		trustForwarded: cfg.TrustForwarded,
	}
	if err := f.SetWorkers(cfg.Workers); err != nil {
		return nil, err
	}
	if f.rt == nil {
		f.ownTransport = NewTransport(TransportConfig{})
		f.rt = f.ownTransport
	}
	return f, nil
}

// SetWorkers validates workers and, only when every entry is valid, puts the
// table in force atomically; requests in flight finish with the table they
// started with. On error the previous table stays.
func (f *Fetcher) SetWorkers(workers map[string]string) error {
	table := make(map[string]*target, len(workers))
	for name, raw := range workers {
		t, err := parseTarget(raw)
		if err != nil {
			return fmt.Errorf("upstream: worker %q: %w", name, err)
		}
		if name == "" {
			return errors.New("upstream: empty worker name")
		}
		table[name] = t
	}
	f.table.Store(&table)
	return nil
}

// Has reports whether the table has a worker called name (the Fallback is
// not asked).
func (f *Fetcher) Has(name string) bool {
	if t := f.table.Load(); t != nil {
		_, ok := (*t)[name]
		return ok
	}
	return false
}

// Workers returns a copy of the table in force: worker name -> base URL.
func (f *Fetcher) Workers() map[string]string {
	t := f.table.Load()
	out := make(map[string]string, len(*t))
	for name, tg := range *t {
		u := url.URL{Scheme: tg.scheme, Host: tg.host, Path: tg.path, RawQuery: tg.query}
		if tg.escPath != tg.path {
			u.RawPath = tg.escPath
		}
		out[name] = u.String()
	}
	return out
}

// CloseIdleConnections closes the idle connections of the fetcher's
// transport (the configured one, when it can).
func (f *Fetcher) CloseIdleConnections() {
	if c, ok := f.rt.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

func parseTarget(raw string) (*target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q: scheme must be http or https", raw)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%q: no host", raw)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%q: credentials in worker URLs are not supported", raw)
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("%q: a fragment is not allowed", raw)
	}
	return &target{
		scheme:  u.Scheme,
		host:    u.Host,
		path:    strings.TrimSuffix(u.Path, "/"),
		escPath: strings.TrimSuffix(u.EscapedPath(), "/"),
		query:   u.RawQuery,
	}, nil
}

// Fetch implements dispatch.Fetcher: it forwards req to the worker p names.
// The response body streams from the worker; the caller closes it.
func (f *Fetcher) Fetch(ctx context.Context, req *http.Request, p *dispatch.Payload) (*http.Response, error) {
	t := (*f.table.Load())[p.WorkerName]
	if t == nil {
		if f.fallback != nil {
			return f.fallback.Fetch(ctx, req, p)
		}
		return nil, fmt.Errorf("%w: no worker named %q", dispatch.ErrWorkerNotFound, p.WorkerName)
	}
	out := f.outgoing(ctx, req, p, t)
	resp, err := f.rt.RoundTrip(out)
	if err != nil {
		return nil, classify(ctx, err, p.WorkerName)
	}
	if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(HeaderLimitExceeded) == "1" {
		// The body says nothing the client should see; drain a little so
		// the connection can be reused, then drop it.
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		resp.Body.Close()
		return nil, fmt.Errorf("%w: worker %q reported a limit breach", dispatch.ErrWorkerLimitExceeded, p.WorkerName)
	}
	removeHopByHop(resp.Header)
	return resp, nil
}

// outbound holds what one forwarded request allocates, so that it takes one
// allocation instead of one per piece: the request, its URL and the values
// of the headers the fetcher sets.
type outbound struct {
	req  http.Request
	url  url.URL
	vals [numSetHeaders]string
}

const numSetHeaders = 6

// outgoing derives the request sent to the worker. It never changes req: it
// makes a shallow copy with a new URL and a filtered copy of the headers, and
// shares the body, so the body streams.
func (f *Fetcher) outgoing(ctx context.Context, req *http.Request, p *dispatch.Payload, t *target) *http.Request {
	o := new(outbound)
	var out *http.Request
	if req.Context() == ctx {
		o.req = *req // the same shallow copy WithContext makes, without its allocation
		out = &o.req
	} else {
		out = req.WithContext(ctx)
	}
	u := &o.url
	u.Scheme, u.Host = t.scheme, t.host
	path := req.URL.Path
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	u.Path = t.path + path
	if req.URL.RawPath != "" || t.escPath != t.path {
		esc := req.URL.EscapedPath()
		if esc == "" || esc[0] != '/' {
			esc = "/" + esc
		}
		u.RawPath = t.escPath + esc
	}
	switch {
	case t.query == "":
		u.RawQuery = req.URL.RawQuery
	case req.URL.RawQuery == "":
		u.RawQuery = t.query
	default:
		u.RawQuery = t.query + "&" + req.URL.RawQuery
	}
	out.URL = u
	out.RequestURI = ""
	out.Close = false
	if !f.preserveHost {
		out.Host = ""
	}
	if req.Body == http.NoBody {
		// A server request without a body (net/http gives those NoBody):
		// send none.
		out.Body = nil
		out.GetBody = nil
	}

	h := make(http.Header, len(req.Header)+numSetHeaders+3)
	conn := req.Header["Connection"]
	for k, vs := range req.Header {
		if isHopByHop(k) || listedIn(conn, k) || strings.HasPrefix(k, dispatchHeaderPrefix) {
			continue
		}
		h[k] = vs // shared: only whole slices are replaced below
	}
	// set stores v as the only value of k, in o.vals[i].
	set := func(i int, k, v string) {
		o.vals[i] = v
		h[k] = o.vals[i : i+1 : i+1]
	}
	if ip := clientIP(req.RemoteAddr); ip != "" {
		if prior, ok := h[HeaderForwardedFor]; ok && len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		set(0, HeaderForwardedFor, ip)
	}
	if !f.trustForwarded || len(h[HeaderForwardedHost]) == 0 {
		set(1, HeaderForwardedHost, req.Host)
	}
	if !f.trustForwarded || len(h[HeaderForwardedProto]) == 0 {
		if req.TLS != nil {
			h[HeaderForwardedProto] = protoHTTPS
		} else {
			h[HeaderForwardedProto] = protoHTTP
		}
	}
	if p.RequestID != "" {
		set(2, dispatch.HeaderRequestID, p.RequestID)
	}
	if p.TenantID != "" {
		set(3, dispatch.HeaderTenantID, p.TenantID)
	}
	set(4, HeaderCPUMs, strconv.Itoa(p.Limits.CPUMs))
	set(5, HeaderSubrequests, strconv.Itoa(p.Limits.SubRequests))
	if _, ok := h["User-Agent"]; !ok {
		// Without this the transport would add Go's own User-Agent.
		h["User-Agent"] = emptyUA
	}
	out.Header = h
	return out
}

// Shared read-only values, so the hot path does not allocate them.
var (
	protoHTTP  = []string{"http"}
	protoHTTPS = []string{"https"}
	emptyUA    = []string{""}
)

func clientIP(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return ""
	}
	return host
}

// isHopByHop reports whether the canonical header key k is hop-by-hop
// (RFC 9110 section 7.6.1, plus the obsolete Proxy-Connection and every
// Proxy-* header).
func isHopByHop(k string) bool {
	switch k {
	case "Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return strings.HasPrefix(k, "Proxy-")
}

// listedIn reports whether the Connection header values name the header k.
func listedIn(connection []string, k string) bool {
	for _, v := range connection {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(tok), k) {
				return true
			}
		}
	}
	return false
}

// removeHopByHop deletes hop-by-hop headers from h in place.
func removeHopByHop(h http.Header) {
	conn := h["Connection"]
	for k := range h {
		if isHopByHop(k) || listedIn(conn, k) {
			delete(h, k)
		}
	}
}

// classify maps a transport error to the dispatch sentinels.
func classify(ctx context.Context, err error, worker string) error {
	if ctx.Err() == context.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: worker %q: %v", dispatch.ErrWorkerTimeout, worker, err)
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		// Refused, unreachable, or the dial timed out: the worker is not
		// there, which is a failure rather than a slow answer.
		return fmt.Errorf("%w: worker %q unreachable: %v", dispatch.ErrWorkerFailure, worker, err)
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return fmt.Errorf("%w: worker %q: %v", dispatch.ErrWorkerFailure, worker, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		// The transport's response header timeout, or a read deadline.
		return fmt.Errorf("%w: worker %q: %v", dispatch.ErrWorkerTimeout, worker, err)
	}
	return fmt.Errorf("%w: worker %q: %v", dispatch.ErrWorkerFailure, worker, err)
}
