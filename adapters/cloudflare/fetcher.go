package cloudflare

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/402claw/dispatcher/dispatch"
)

// FetcherConfig configures a Fetcher.
type FetcherConfig struct {
	// URL is the dispatch worker's base URL, for example
	// https://dispatch.example.workers.dev (required).
	URL string
	// Secret is the shared DISPATCH_SECRET (required, at least 16 bytes).
	Secret []byte
	// HTTPClient sends the requests. Nil means a client with no timeout of
	// its own (the dispatcher's context deadline bounds each call) over a
	// copy of http.DefaultTransport that keeps 512 idle connections to the
	// dispatch worker, which every request goes to; or over
	// http.DefaultTransport itself when the application replaced it with a
	// RoundTripper of its own. The fetcher uses a copy that never follows
	// redirects (a tenant worker's 3xx is its answer to the client); the
	// caller's client is not changed.
	HTTPClient *http.Client
	// Now is the clock for signature timestamps (nil: time.Now).
	Now func() time.Time
}

// Fetcher is a dispatch.Fetcher that forwards requests to the dispatch
// worker in gateway mode. Each request carries the routing decision (worker,
// limits, request id, tenant, method, host, path, timestamp) in signed
// X-Dispatch-* headers; the dispatch worker checks the signature and calls
// the named worker with the limits. Answers marked with X-Dispatch-Error
// become errors wrapping the dispatch sentinels; every other answer,
// whatever its status, is the tenant worker's and is returned as is.
//
// It is safe for concurrent use.
type Fetcher struct {
	base   *url.URL
	secret []byte
	client *http.Client
	now    func() time.Time
}

var _ dispatch.Fetcher = (*Fetcher)(nil)

// NewFetcher validates cfg and returns a Fetcher.
func NewFetcher(cfg FetcherConfig) (*Fetcher, error) {
	if cfg.URL == "" {
		return nil, errors.New("cloudflare: FetcherConfig.URL is required")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("cloudflare: FetcherConfig.URL %q is not an http(s) URL", cfg.URL)
	}
	if len(cfg.Secret) < 16 {
		return nil, errors.New("cloudflare: FetcherConfig.Secret must be at least 16 bytes")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: newTransport()}
	}
	f := &Fetcher{base: u, secret: append([]byte(nil), cfg.Secret...), client: noRedirects(hc), now: cfg.Now}
	if f.now == nil {
		f.now = time.Now
	}
	return f, nil
}

// idleConns is how many idle connections a Fetcher's own transport keeps to
// the dispatch worker: every request goes to that one host, and
// http.DefaultTransport keeps two, so with more requests in flight most
// would dial (and handshake) a connection of their own and close it.
const idleConns = 512

func newTransport() http.RoundTripper {
	d, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		// The application's own RoundTripper: requests go through it.
		return http.DefaultTransport
	}
	t := d.Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = idleConns, idleConns
	return t
}

// noRedirects returns a copy of c (a new client when c is nil) that never
// follows a redirect. The dispatch worker passes a tenant worker's 3xx on
// (redirect: "manual"); following it here would re-send the client's
// request, body and signed routing headers included, to wherever the
// worker points, and run a relative redirect's worker a second time.
func noRedirects(c *http.Client) *http.Client {
	var hc http.Client
	if c != nil {
		hc = *c
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &hc
}

// maxErrorBody bounds how much of a dispatch worker error body is read.
const maxErrorBody = 64 << 10

// hopHeaders are not forwarded (RFC 9110 section 7.6.1).
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// Fetch implements dispatch.Fetcher.
func (f *Fetcher) Fetch(ctx context.Context, req *http.Request, p *dispatch.Payload) (*http.Response, error) {
	s := SignedFromPayload(p, f.now())
	if s.Method == "" {
		s.Method = req.Method
	}
	if s.Host == "" {
		s.Host = req.Host
	}
	for _, v := range []string{s.RequestID, s.TenantID, s.WorkerName, s.Plan, s.Host, s.Path} {
		if strings.ContainsAny(v, "\r\n") {
			return nil, fmt.Errorf("%w: a routing value contains a line break", dispatch.ErrBadRequest)
		}
	}
	target := *f.base
	target.Path, target.RawPath = "", ""
	target.Opaque = ""
	target.RawQuery = ""
	u := target.String() + s.Path
	out, err := http.NewRequestWithContext(ctx, s.Method, u, req.Body)
	if err != nil {
		return nil, fmt.Errorf("%w: building the request to the dispatch worker: %v", dispatch.ErrWorkerFailure, err)
	}
	out.ContentLength = req.ContentLength
	out.GetBody = req.GetBody
	out.Header = req.Header.Clone()
	if out.Header == nil {
		out.Header = make(http.Header)
	}
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	SetHeaders(out.Header, f.secret, s)
	resp, err := f.client.Do(out)
	if err != nil {
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || ctx.Err() == context.DeadlineExceeded || (errors.As(err, &ne) && ne.Timeout()) {
			return nil, fmt.Errorf("%w: worker %q via the dispatch worker: %v", dispatch.ErrWorkerTimeout, s.WorkerName, err)
		}
		return nil, fmt.Errorf("%w: dispatch worker unreachable: %v", dispatch.ErrWorkerFailure, err)
	}
	code := resp.Header.Get(HeaderError)
	if code == "" {
		return resp, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	return nil, remoteError(resp.StatusCode, code, body, s.WorkerName)
}

// RemoteError is an error answer of the dispatch worker. It unwraps to the
// dispatch sentinel of its code, so errors.Is(err, dispatch.ErrWorkerNotFound)
// and dispatch.StatusOf work on it.
type RemoteError struct {
	Status  int    // the dispatch worker's HTTP status
	Code    string // its error code
	Message string // its message
	Worker  string
	err     *dispatch.Error
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("%s: worker %q: %s (dispatch worker answered %d %s)", e.err.Message, e.Worker, e.Message, e.Status, e.Code)
}

// Unwrap returns the dispatch sentinel.
func (e *RemoteError) Unwrap() error { return e.err }

func remoteError(status int, code string, body []byte, worker string) *RemoteError {
	var b dispatch.ErrorBody
	if json.Unmarshal(body, &b) == nil && b.Error != "" {
		code = b.Error
	}
	msg := b.Message
	if msg == "" {
		msg = strings.TrimSpace(string(body))
	}
	e := &RemoteError{Status: status, Code: code, Message: msg, Worker: worker}
	switch code {
	case "worker_not_found":
		e.err = dispatch.ErrWorkerNotFound
	case "worker_limit_exceeded":
		e.err = dispatch.ErrWorkerLimitExceeded
	case "worker_timeout":
		e.err = dispatch.ErrWorkerTimeout
	case "unauthorized":
		// The gateway and the dispatch worker disagree on the secret or
		// the clock: the tenant's worker is unreachable for us.
		e.err = dispatch.ErrWorkerFailure
		e.Message = "the dispatch worker refused our signature (check DISPATCH_SECRET and clock skew): " + msg
	default:
		e.err = dispatch.ErrWorkerFailure
	}
	return e
}
