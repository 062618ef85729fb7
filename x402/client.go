package x402

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultFacilitatorTimeout bounds one facilitator call when
// FacilitatorConfig.Timeout is zero.
const DefaultFacilitatorTimeout = 10 * time.Second

// FacilitatorConfig configures a FacilitatorClient. The zero value is
// usable.
type FacilitatorConfig struct {
	// APIKey, when set, is sent as "Authorization: Bearer <APIKey>".
	APIKey string
	// Timeout bounds each call (request and answer); zero means
	// DefaultFacilitatorTimeout, negative means no bound beyond the
	// context's.
	Timeout time.Duration
	// HTTPClient sends the requests; nil means a client of its own over
	// NewFacilitatorTransport. The facilitator client works on a copy
	// whose redirect policy refuses every redirect; the caller's client is
	// never changed.
	HTTPClient *http.Client
}

// facilitatorIdleConns is how many idle connections NewFacilitatorTransport
// keeps to the facilitator's host.
const facilitatorIdleConns = 256

// NewFacilitatorTransport returns a transport for calls to one facilitator:
// a copy of http.DefaultTransport (proxy from the environment, timeouts,
// HTTP/2, TLS settings) with an idle pool that holds a connection for every
// paid request in flight. http.DefaultTransport keeps two idle connections
// per host, so with more than two paid requests at once most verify and
// settle calls dialed a new connection (and, to an https facilitator, made
// a new TLS handshake), then closed it. An application that replaced
// http.DefaultTransport with a RoundTripper of its own (an egress policy,
// tracing) gets that RoundTripper back: its calls go through it as before.
func NewFacilitatorTransport() http.RoundTripper {
	d, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return http.DefaultTransport
	}
	t := d.Clone()
	t.MaxIdleConns = facilitatorIdleConns
	t.MaxIdleConnsPerHost = facilitatorIdleConns
	return t
}

// FacilitatorClient is a Facilitator reached over HTTP: POST {base}/verify,
// POST {base}/settle and GET {base}/supported.
//
// How answers are read:
//   - a body with a boolean isValid (verify) or success (settle) is the
//     answer, whatever the HTTP status: isValid false means invalid,
//     success false means failed (or pending, see SettleResponse.Pending),
//     and success true means settled (funds may have moved, so it is never
//     discarded). The one exception is isValid true with a non-2xx status,
//     which is contradictory and, since nothing has moved yet, is treated
//     as no answer;
//   - anything else (connection error, timeout, empty or unparseable body,
//     a 5xx or any other status without such a body) is an error wrapping
//     ErrFacilitatorUnavailable.
//
// Redirects are never followed, and any 3xx answer, whatever its body, is
// ErrFacilitatorUnavailable: following one would re-post the client's
// signed payment to wherever the Location header points, handing a
// settleable authorization to a host nobody configured.
type FacilitatorClient struct {
	base    string
	apiKey  string
	timeout time.Duration
	hc      *http.Client
}

var _ Facilitator = (*FacilitatorClient)(nil)

// NewFacilitatorClient returns a client for the facilitator at baseURL (an
// absolute http or https URL; a trailing slash is ignored).
func NewFacilitatorClient(baseURL string, cfg FacilitatorConfig) (*FacilitatorClient, error) {
	u, err := url.Parse(strings.TrimSpace(baseURL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("x402: facilitator URL %q is not an absolute http(s) URL", baseURL)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultFacilitatorTimeout
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: NewFacilitatorTransport()}
	}
	return &FacilitatorClient{
		base:    strings.TrimRight(u.String(), "/"),
		apiKey:  cfg.APIKey,
		timeout: timeout,
		hc:      noRedirects(hc),
	}, nil
}

// noRedirects returns a copy of c (a new client when c is nil) that never
// follows a redirect: the 3xx answer itself comes back, and do refuses it.
// The copy shares c's Transport and Jar, so connection pools are reused,
// but c's own CheckRedirect is left as it was.
func noRedirects(c *http.Client) *http.Client {
	var hc http.Client
	if c != nil {
		hc = *c
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &hc
}

// Verify posts the request to /verify.
func (c *FacilitatorClient) Verify(ctx context.Context, req FacilitatorRequest) (*VerifyResponse, error) {
	body, err := req.Body()
	if err != nil {
		return nil, err
	}
	status, answer, err := c.do(ctx, http.MethodPost, "/verify", body)
	if err != nil {
		return nil, err
	}
	vr, perr := ParseVerifyResponse(answer)
	if perr != nil {
		return nil, unavailable("verify", status, perr)
	}
	if vr.IsValid && (status < 200 || status > 299) {
		// A "valid" verdict with an error status is contradictory; since
		// nothing has moved yet, refusing it is the safe reading.
		return nil, unavailable("verify", status, errors.New("isValid true with an error status"))
	}
	return vr, nil
}

// Settle posts the request to /settle.
func (c *FacilitatorClient) Settle(ctx context.Context, req FacilitatorRequest) (*SettleResponse, error) {
	body, err := req.Body()
	if err != nil {
		return nil, err
	}
	status, answer, err := c.do(ctx, http.MethodPost, "/settle", body)
	if err != nil {
		return nil, err
	}
	sr, perr := ParseSettleResponse(answer)
	if perr != nil {
		return nil, unavailable("settle", status, perr)
	}
	return sr, nil
}

// Supported fetches /supported. Only a 2xx answer with a kinds array
// counts.
func (c *FacilitatorClient) Supported(ctx context.Context) (*SupportedResponse, error) {
	status, answer, err := c.do(ctx, http.MethodGet, "/supported", nil)
	if err != nil {
		return nil, err
	}
	if status < 200 || status > 299 {
		return nil, unavailable("supported", status, fmt.Errorf("status %d", status))
	}
	sr, perr := ParseSupportedResponse(answer)
	if perr != nil {
		return nil, unavailable("supported", status, perr)
	}
	return sr, nil
}

// do sends one request and reads the whole answer (bounded). Transport
// failures wrap ErrFacilitatorUnavailable together with the cause, so
// errors.Is also finds context.DeadlineExceeded or context.Canceled.
func (c *FacilitatorClient) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	hreq, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %s: %w", ErrFacilitatorUnavailable, path, err)
	}
	hreq.Header.Set("Accept", "application/json")
	if body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	if c.apiKey != "" {
		hreq.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	resp, err := c.hc.Do(hreq)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %s: %w", ErrFacilitatorUnavailable, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		// Not followed (see noRedirects), and not an answer either.
		return resp.StatusCode, nil, unavailable(strings.TrimPrefix(path, "/"), resp.StatusCode, fmt.Errorf("redirect to %q refused", clipLong(resp.Header.Get("Location"))))
	}
	answer, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("%w: %s: reading answer (status %d): %w", ErrFacilitatorUnavailable, path, resp.StatusCode, err)
	}
	return resp.StatusCode, answer, nil
}

func unavailable(op string, status int, cause error) error {
	return fmt.Errorf("%w: %s: status %d: %v", ErrFacilitatorUnavailable, op, status, cause)
}
