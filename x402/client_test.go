package x402_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/402claw/dispatcher/x402"
	"github.com/stretchr/testify/require"
)

// answer is a canned facilitator response.
type answer struct {
	status int
	body   string
	delay  time.Duration
}

// recorded is what the fake facilitator saw.
type recorded struct {
	method, path, auth, contentType string
	body                            []byte
}

func fakeFacilitator(t *testing.T, a answer) (*httptest.Server, func() recorded) {
	t.Helper()
	var (
		mu  sync.Mutex
		got recorded
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = recorded{r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), b}
		mu.Unlock()
		if a.delay > 0 {
			select {
			case <-time.After(a.delay):
			case <-r.Context().Done():
				return
			}
		}
		w.WriteHeader(a.status)
		_, _ = io.WriteString(w, a.body)
	}))
	t.Cleanup(srv.Close)
	return srv, func() recorded { mu.Lock(); defer mu.Unlock(); return got }
}

func fixtureRequest(t testing.TB, name string) x402.FacilitatorRequest {
	t.Helper()
	p, err := x402.DecodePaymentHeader(fixtureNamed(t, name).ClientSent.HeaderValue)
	require.NoError(t, err)
	return x402.FacilitatorRequest{Payment: p, Requirement: serverRequirement(t)}
}

func newClient(t testing.TB, url string, cfg x402.FacilitatorConfig) *x402.FacilitatorClient {
	t.Helper()
	c, err := x402.NewFacilitatorClient(url, cfg)
	require.NoError(t, err)
	return c
}

func TestVerifyAnswers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		a       answer
		valid   bool
		reason  string
		unavail bool
	}{
		{"valid 200", answer{200, `{"isValid":true,"payer":"0xabc"}`, 0}, true, "", false},
		{"invalid 200", answer{200, `{"isValid":false,"invalidReason":"insufficient_funds","payer":"0xabc"}`, 0}, false, "insufficient_funds", false},
		{"invalid 400", answer{400, `{"isValid":false,"invalidReason":"invalid_payload"}`, 0}, false, "invalid_payload", false},
		{"invalid 402", answer{402, `{"isValid":false,"invalidReason":"invalid_exact_evm_payload_signature"}`, 0}, false, "invalid_exact_evm_payload_signature", false},
		{"invalid 500", answer{500, `{"isValid":false,"invalidReason":"unexpected_verify_error"}`, 0}, false, "unexpected_verify_error", false},
		{"reason of wrong type", answer{200, `{"isValid":false,"invalidReason":{"code":1}}`, 0}, false, "", false},
		{"500 junk", answer{500, `<html>oops</html>`, 0}, false, "", true},
		{"502 empty", answer{502, ``, 0}, false, "", true},
		{"200 empty", answer{200, ``, 0}, false, "", true},
		{"200 junk", answer{200, `isValid: true`, 0}, false, "", true},
		{"200 without isValid", answer{200, `{"valid":true}`, 0}, false, "", true},
		{"200 isValid string", answer{200, `{"isValid":"true"}`, 0}, false, "", true},
		{"200 truncated", answer{200, `{"isValid":tr`, 0}, false, "", true},
		{"401 error body", answer{401, `{"error":"bad key"}`, 0}, false, "", true},
		{"valid with 500", answer{500, `{"isValid":true}`, 0}, false, "", true},
		{"valid with 201", answer{201, `{"isValid":true}`, 0}, true, "", false},
		{"200 array", answer{200, `[{"isValid":true}]`, 0}, false, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := fakeFacilitator(t, tc.a)
			vr, err := newClient(t, srv.URL, x402.FacilitatorConfig{}).Verify(context.Background(), fixtureRequest(t, "client-v2.json"))
			if tc.unavail {
				require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable)
				require.Nil(t, vr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.valid, vr.IsValid)
			require.Equal(t, tc.reason, vr.InvalidReason)
		})
	}
}

func TestSettleAnswers(t *testing.T) {
	t.Parallel()
	tx := "0x" + strings.Repeat("ab", 32)
	cases := []struct {
		name    string
		a       answer
		outcome x402.SettleOutcome
		reason  string
		unavail bool
	}{
		{"success 200", answer{200, `{"success":true,"transaction":"` + tx + `","network":"eip155:84532","payer":"0xabc"}`, 0}, x402.SettleSucceeded, "", false},
		{"failed 200", answer{200, `{"success":false,"errorReason":"insufficient_funds","transaction":"","network":"eip155:84532"}`, 0}, x402.SettleFailed, "insufficient_funds", false},
		{"failed 400", answer{400, `{"success":false,"errorReason":"invalid_payload"}`, 0}, x402.SettleFailed, "invalid_payload", false},
		{"failed 402", answer{402, `{"success":false,"errorReason":"x"}`, 0}, x402.SettleFailed, "x", false},
		{"failed 500", answer{500, `{"success":false,"errorReason":"unexpected_settle_error"}`, 0}, x402.SettleFailed, "unexpected_settle_error", false},
		{"failed 503", answer{503, `{"success":false}`, 0}, x402.SettleFailed, "", false},
		{"success with 500 is kept (funds moved)", answer{500, `{"success":true,"transaction":"` + tx + `"}`, 0}, x402.SettleSucceeded, "", false},
		{"pending 500 (CDP)", answer{500, `{"success":false,"errorReason":"settlement_pending","transaction":"` + tx + `","network":"eip155:8453"}`, 0}, x402.SettlePending, "settlement_pending", false},
		{"pending 200 (Circle)", answer{200, `{"success":false,"errorReason":"settlement_pending","paymentId":"p1"}`, 0}, x402.SettlePending, "settlement_pending", false},
		{"pending status field", answer{202, `{"success":false,"status":"PENDING","transaction":"` + tx + `"}`, 0}, x402.SettlePending, "settlement_pending", false},
		{"500 junk", answer{500, `Internal Server Error`, 0}, 0, "", true},
		{"504 empty", answer{504, ``, 0}, 0, "", true},
		{"200 empty", answer{200, `   `, 0}, 0, "", true},
		{"200 no success", answer{200, `{"transaction":"` + tx + `"}`, 0}, 0, "", true},
		{"200 success null", answer{200, `{"success":null}`, 0}, 0, "", true},
		{"200 success number", answer{200, `{"success":1}`, 0}, 0, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := fakeFacilitator(t, tc.a)
			sr, err := newClient(t, srv.URL, x402.FacilitatorConfig{}).Settle(context.Background(), fixtureRequest(t, "client-v2.json"))
			if tc.unavail {
				require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable)
				require.Nil(t, sr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.outcome, sr.Outcome())
			require.Equal(t, tc.outcome == x402.SettlePending, sr.Pending())
			require.Equal(t, tc.reason, sr.ErrorReason)
		})
	}
}

func TestClientRequestShape(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"client-v2.json", "client-v1.json"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv, got := fakeFacilitator(t, answer{200, `{"isValid":true}`, 0})
			c := newClient(t, srv.URL+"/", x402.FacilitatorConfig{APIKey: "sekret"})
			req := fixtureRequest(t, name)
			_, err := c.Verify(context.Background(), req)
			require.NoError(t, err)
			r := got()
			require.Equal(t, http.MethodPost, r.method)
			require.Equal(t, "/verify", r.path)
			require.Equal(t, "Bearer sekret", r.auth)
			require.Equal(t, "application/json", r.contentType)

			var body struct {
				X402Version         int             `json:"x402Version"`
				PaymentPayload      json.RawMessage `json:"paymentPayload"`
				PaymentRequirements map[string]any  `json:"paymentRequirements"`
			}
			require.NoError(t, json.Unmarshal(r.body, &body))
			require.Equal(t, req.Payment.Version, body.X402Version)
			require.JSONEq(t, string(fixtureNamed(t, name).ClientSent.Decoded), string(body.PaymentPayload))
			pr := body.PaymentRequirements
			if req.Payment.Version == 1 {
				require.Equal(t, "base-sepolia", pr["network"])
				require.Equal(t, "10000", pr["maxAmountRequired"])
				require.Equal(t, "http://127.0.0.1/t/demo/rows", pr["resource"])
				require.NotContains(t, pr, "amount")
			} else {
				require.Equal(t, "eip155:84532", pr["network"])
				require.Equal(t, "10000", pr["amount"])
				require.NotContains(t, pr, "maxAmountRequired")
			}
			require.Equal(t, "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", pr["payTo"])

			// The facilitator side parses it back to the same thing.
			parsed, err := x402.ParseFacilitatorRequest(r.body)
			require.NoError(t, err)
			require.Equal(t, req.Payment.Authorization, parsed.Payment.Authorization)
			require.Equal(t, req.Requirement.Amount, parsed.Requirement.Amount)
			require.Equal(t, req.Requirement.Network, parsed.Requirement.Network)

			_, err = c.Settle(context.Background(), req)
			require.Error(t, err) // {"isValid":true} is no settle answer
			require.Equal(t, "/settle", got().path)
		})
	}
}

func TestClientWithoutKeySendsNoAuthorization(t *testing.T) {
	t.Parallel()
	srv, got := fakeFacilitator(t, answer{200, `{"isValid":true}`, 0})
	_, err := newClient(t, srv.URL, x402.FacilitatorConfig{}).Verify(context.Background(), fixtureRequest(t, "client-v2.json"))
	require.NoError(t, err)
	require.Empty(t, got().auth)
}

func TestClientTimeout(t *testing.T) {
	t.Parallel()
	srv, _ := fakeFacilitator(t, answer{200, `{"isValid":true}`, 5 * time.Second})
	c := newClient(t, srv.URL, x402.FacilitatorConfig{Timeout: 50 * time.Millisecond})
	start := time.Now()
	_, err := c.Verify(context.Background(), fixtureRequest(t, "client-v2.json"))
	require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 2*time.Second)

	// The caller's own deadline counts too.
	c = newClient(t, srv.URL, x402.FacilitatorConfig{Timeout: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = c.Settle(ctx, fixtureRequest(t, "client-v2.json"))
	require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable)
}

func TestClientConnectionRefused(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	c := newClient(t, "http://"+addr, x402.FacilitatorConfig{})
	_, err = c.Verify(context.Background(), fixtureRequest(t, "client-v2.json"))
	require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable)
	_, err = c.Supported(context.Background())
	require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable)
}

func TestClientOversizeAnswer(t *testing.T) {
	t.Parallel()
	big := `{"isValid":true,"payer":"` + strings.Repeat("a", x402.MaxResponseBytes) + `"}`
	srv, _ := fakeFacilitator(t, answer{200, big, 0})
	_, err := newClient(t, srv.URL, x402.FacilitatorConfig{}).Verify(context.Background(), fixtureRequest(t, "client-v2.json"))
	require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable)
}

func TestClientSupported(t *testing.T) {
	t.Parallel()
	srv, got := fakeFacilitator(t, answer{200, `{"kinds":[{"x402Version":2,"scheme":"exact","network":"eip155:84532"}],"extensions":[],"signers":{"eip155:*":["0x1234"]}}`, 0})
	sup, err := newClient(t, srv.URL, x402.FacilitatorConfig{APIKey: "k"}).Supported(context.Background())
	require.NoError(t, err)
	require.Equal(t, http.MethodGet, got().method)
	require.Equal(t, "/supported", got().path)
	require.Equal(t, "Bearer k", got().auth)
	require.Equal(t, []x402.SupportedKind{{X402Version: 2, Scheme: "exact", Network: "eip155:84532"}}, sup.Kinds)
	require.Equal(t, []string{"0x1234"}, sup.Signers["eip155:*"])

	for _, a := range []answer{{500, `{"kinds":[]}`, 0}, {200, `{}`, 0}, {200, `nope`, 0}} {
		srv, _ := fakeFacilitator(t, a)
		_, err := newClient(t, srv.URL, x402.FacilitatorConfig{}).Supported(context.Background())
		require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable, a.body)
	}
}

func TestNewFacilitatorClientValidatesURL(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "localhost:8080", "ftp://x", "http://", "::"} {
		_, err := x402.NewFacilitatorClient(u, x402.FacilitatorConfig{})
		require.Error(t, err, u)
	}
}

func TestClientRefusesRequestWithoutPayment(t *testing.T) {
	t.Parallel()
	c := newClient(t, "http://127.0.0.1:1", x402.FacilitatorConfig{})
	_, err := c.Verify(context.Background(), x402.FacilitatorRequest{Requirement: serverRequirement(t)})
	require.ErrorIs(t, err, x402.ErrInvalidPayment)
	require.False(t, errors.Is(err, x402.ErrFacilitatorUnavailable))
}

// TestClientRefusesRedirects: a facilitator answering 3xx never gets its
// redirect followed (the signed payment would be re-posted to the
// Location), and the answer is ErrFacilitatorUnavailable whatever its body.
func TestClientRefusesRedirects(t *testing.T) {
	t.Parallel()
	var elsewhere atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		switch r.URL.Path {
		case "/settle":
			_, _ = io.WriteString(w, `{"success":true,"transaction":"0xabc","network":"eip155:84532"}`)
		case "/supported":
			_, _ = io.WriteString(w, `{"kinds":[]}`)
		default:
			_, _ = io.WriteString(w, `{"isValid":true}`)
		}
	}))
	t.Cleanup(target.Close)

	callerCheck := func(*http.Request, []*http.Request) error { return nil }
	for _, status := range []int{http.StatusTemporaryRedirect, http.StatusFound, http.StatusMovedPermanently, http.StatusSeeOther, http.StatusPermanentRedirect} {
		// The redirecting facilitator's body looks like a verdict, so only
		// the status can make the client refuse it.
		var hits atomic.Int64
		redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			w.Header().Set("Location", target.URL+r.URL.Path)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			if r.URL.Path == "/settle" {
				_, _ = io.WriteString(w, `{"success":true,"transaction":"0xdef"}`)
			} else {
				_, _ = io.WriteString(w, `{"isValid":false,"invalidReason":"nope","kinds":[]}`)
			}
		}))
		t.Cleanup(redirector.Close)

		own := &http.Client{CheckRedirect: callerCheck}
		for name, cfg := range map[string]x402.FacilitatorConfig{
			"own client":    {},
			"caller client": {HTTPClient: own},
			"default-like":  {HTTPClient: &http.Client{}},
		} {
			c := newClient(t, redirector.URL, cfg)
			req := fixtureRequest(t, "client-v2.json")
			vr, err := c.Verify(context.Background(), req)
			require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable, "%d %s verify", status, name)
			require.Nil(t, vr)
			sr, err := c.Settle(context.Background(), req)
			require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable, "%d %s settle", status, name)
			require.Nil(t, sr)
			sup, err := c.Supported(context.Background())
			require.ErrorIs(t, err, x402.ErrFacilitatorUnavailable, "%d %s supported", status, name)
			require.Nil(t, sup)
		}
		require.Equal(t, int64(9), hits.Load(), "three calls for each of three clients reach the redirector")
		// The caller's client is not mutated: its own redirect policy stays.
		require.NotNil(t, own.CheckRedirect)
		require.NoError(t, own.CheckRedirect(nil, nil))
	}
	require.Zero(t, elsewhere.Load(), "the redirect target must never be called")
}

// TestClientCallerClientStillFollowsItsRedirects shows that the facilitator
// client copies the caller's http.Client rather than changing it: the
// caller's client, used directly, still follows redirects as before.
func TestClientCallerClientStillFollowsItsRedirects(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	t.Cleanup(target.Close)
	redirector := httptest.NewServer(http.RedirectHandler(target.URL, http.StatusFound))
	t.Cleanup(redirector.Close)

	own := &http.Client{}
	_ = newClient(t, redirector.URL, x402.FacilitatorConfig{HTTPClient: own})
	require.Nil(t, own.CheckRedirect, "the caller's client is not changed")
	resp, err := own.Get(redirector.URL)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, int64(1), hits.Load())
}

// TestClientUsesCallerTransport: the copy keeps the caller's transport.
func TestClientUsesCallerTransport(t *testing.T) {
	t.Parallel()
	srv, _ := fakeFacilitator(t, answer{200, `{"isValid":true}`, 0})
	var trips atomic.Int64
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		trips.Add(1)
		return http.DefaultTransport.RoundTrip(r)
	})
	c := newClient(t, srv.URL, x402.FacilitatorConfig{HTTPClient: &http.Client{Transport: rt}})
	vr, err := c.Verify(context.Background(), fixtureRequest(t, "client-v2.json"))
	require.NoError(t, err)
	require.True(t, vr.IsValid)
	require.Equal(t, int64(1), trips.Load())
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A settle answer's amount (upto) and extra survive parsing; junk in them
// is dropped, never an error.
func TestParseSettleResponseAmountAndExtra(t *testing.T) {
	r, err := x402.ParseSettleResponse([]byte(`{"success":true,"transaction":"0xab","network":"eip155:84532","amount":"0300","extra":{"chargedAmount":"300"}}`))
	require.NoError(t, err)
	require.Equal(t, "300", r.Amount)
	require.Equal(t, "300", r.Extra["chargedAmount"])
	r, err = x402.ParseSettleResponse([]byte(`{"success":true,"transaction":"","network":"x","amount":"-1","extra":[1]}`))
	require.NoError(t, err)
	require.Empty(t, r.Amount)
	require.Nil(t, r.Extra)
}

// A client of its own keeps a connection for every call in flight: rounds
// of concurrent calls reuse the first round's connections instead of
// dialing new ones (http.DefaultTransport keeps two idle per host, and
// dialed about 30 new connections a round here).
func TestOwnClientReusesConnections(t *testing.T) {
	t.Parallel()
	var dialed atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		time.Sleep(2 * time.Millisecond) // every call of a round is in flight at once
		_, _ = w.Write([]byte(`{"isValid":true,"payer":"0xabc"}`))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dialed.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, x402.FacilitatorConfig{})
	req := fixtureRequest(t, "client-v2.json")
	const inFlight, rounds = 32, 5
	var failed atomic.Int64
	for range rounds {
		var wg sync.WaitGroup
		for range inFlight {
			wg.Go(func() {
				if vr, err := c.Verify(context.Background(), req); err != nil || !vr.IsValid {
					failed.Add(1)
				}
			})
		}
		wg.Wait()
	}
	require.Zero(t, failed.Load(), "calls that failed")
	require.LessOrEqual(t, dialed.Load(), int64(inFlight), "connections dialed for %d rounds of %d calls", rounds, inFlight)
}

type countingRoundTripper struct {
	next http.RoundTripper
	n    atomic.Int64
}

func (c *countingRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.next.RoundTrip(r)
}

// An application that replaced http.DefaultTransport with a RoundTripper of
// its own (an egress policy, tracing) still has a FacilitatorClient of its
// own go through it. Not parallel: it swaps the process-wide default.
func TestOwnClientKeepsAnApplicationsDefaultTransport(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"isValid":true,"payer":"0xabc"}`))
	}))
	t.Cleanup(srv.Close)
	app := &countingRoundTripper{next: http.DefaultTransport}
	http.DefaultTransport = app
	t.Cleanup(func() { http.DefaultTransport = app.next })
	c := newClient(t, srv.URL, x402.FacilitatorConfig{})
	vr, err := c.Verify(context.Background(), fixtureRequest(t, "client-v2.json"))
	require.NoError(t, err)
	require.True(t, vr.IsValid)
	require.Equal(t, int64(1), app.n.Load(), "calls through the application's RoundTripper")
}
