package payment_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/shopspring/decimal"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/exact"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/payment"
	"github.com/402claw/dispatcher/x402/permit2"
)

const routesDir = `{"tenants":[{"slug":"paid","workerName":"w","priceUsd":"0.01","x402Enabled":true,"ownerUserId":"owner-1",
 "routes":[
  {"method":"GET","path":"/health","priceUsd":"0"},
  {"method":"GET","path":"/rows/:id","priceUsd":"0.002","description":"one row","mimeType":"text/csv"},
  {"path":"/bulk/*","priceUsd":"0.05"}]}]}`

// challengeOf asks target without paying and returns the 402's v2 body.
func (e *env) challengeOf(target string) *x402.PaymentRequired {
	e.t.Helper()
	rec := e.do(target, nil)
	require.Equal(e.t, 402, rec.Code, rec.Body.String())
	pr, err := x402.DecodePaymentRequired(rec.Header().Get("PAYMENT-REQUIRED"))
	require.NoError(e.t, err)
	return pr
}

// payFor signs the first way to pay that target's challenge offers.
func (e *env) payFor(target string, version int, opts localfacilitator.SignOptions) http.Header {
	e.t.Helper()
	pr := e.challengeOf(target)
	sp, err := e.signer.Sign(x402.RequirementFromV2(pr.Accepts[0], pr.Resource), version, opts)
	require.NoError(e.t, err)
	h := http.Header{}
	h.Set(sp.Header, sp.Value)
	return h
}

func TestRoutePrices(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.rebuild(rebuildOpts{dir: routesDir})

	// A free route on a charging tenant: no payment, the worker runs.
	rec := e.do("http://gw.local/t/paid/health", nil)
	require.Equal(t, 200, rec.Code, rec.Body.String())
	require.Empty(t, rec.Header().Get("PAYMENT-REQUIRED"))

	// A route priced below the tenant, with its own description and type.
	pr := e.challengeOf("http://gw.local/t/paid/rows/7")
	require.Equal(t, "2000", pr.Accepts[0].Amount)
	require.Equal(t, "one row", pr.Resource.Description)
	require.Equal(t, "text/csv", pr.Resource.MimeType)
	rec = e.do("http://gw.local/t/paid/rows/7", e.payFor("http://gw.local/t/paid/rows/7", 2, localfacilitator.SignOptions{}))
	require.Equal(t, 200, rec.Code, rec.Body.String())

	// A wildcard route priced above it, for any method.
	require.Equal(t, "50000", e.challengeOf("http://gw.local/t/paid/bulk/a/b").Accepts[0].Amount)
	// No route: the tenant's own price.
	require.Equal(t, "10000", e.challengeOf("http://gw.local/t/paid/other").Accepts[0].Amount)

	// A payment for the cheap route does not buy the dear one.
	cheap := e.payFor("http://gw.local/t/paid/rows/8", 2, localfacilitator.SignOptions{})
	rec = e.do("http://gw.local/t/paid/bulk/x", cheap)
	require.Equal(t, 402, rec.Code)
	require.Contains(t, rec.Body.String(), "amount")

	es := e.entries()
	require.Len(t, es, 1)
	require.Equal(t, "0.002", es[0].Amount)
	require.Equal(t, "2000", es[0].AmountAtomic)
	require.Equal(t, int64(2), e.calls.Load())
}

// Finding 1: the rate limits come before any facilitator call. Six tries
// over a one-per-minute limit make one verify call.
func TestRateLimitBeforeFacilitator(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	store := memory.NewKV()
	lim, err := quota.New(store, quota.Config{})
	require.NoError(t, err)
	e.rebuild(rebuildOpts{kv: store, mutate: func(c *payment.Config) { c.Meter = lim },
		stages: func(pay *payment.Stage) []dispatch.Stage { return []dispatch.Stage{lim.Stage(), pay} },
		dir: `{"tenants":[{"slug":"paid","workerName":"w","priceUsd":"0.01","x402Enabled":true,
		  "rateLimit":{"perCaller":{"requests":1,"windowSeconds":60}}}]}`})
	e.fac.VerifyFn = func(context.Context, x402.FacilitatorRequest) (*x402.VerifyResponse, error) {
		return &x402.VerifyResponse{IsValid: false, InvalidReason: "insufficient_funds"}, nil
	}
	codes := map[int]int{}
	for i := 0; i < 6; i++ {
		hdr := e.pay(target, 2, localfacilitator.SignOptions{})
		hdr.Set("X-Agent-Id", "broke")
		codes[e.do(target, hdr).Code]++
	}
	require.Equal(t, map[int]int{402: 1, 429: 5}, codes)
	require.Equal(t, int64(1), e.fac.verifies.Load())
	require.Equal(t, int64(0), e.calls.Load())
}

// Finding 5: an authorization valid far longer than the challenge asks is
// refused at the gateway, before the facilitator, so its records need not
// live for ever.
func TestFarFutureAuthorizationRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	far := time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := e.do(target, e.pay(target, 2, localfacilitator.SignOptions{ValidBefore: &far}))
	require.Equal(t, 402, rec.Code)
	pr, err := x402.DecodePaymentRequired(rec.Header().Get("PAYMENT-REQUIRED"))
	require.NoError(t, err)
	require.Contains(t, pr.Error, "valid until 9999")
	require.Equal(t, int64(0), e.fac.verifies.Load())
	soon := time.Now().Add(5 * time.Minute)
	rec = e.do(target, e.pay(target, 2, localfacilitator.SignOptions{ValidBefore: &soon}))
	require.Equal(t, 200, rec.Code, "within maxTimeoutSeconds and the slack: %s", rec.Body.String())
}

// Finding 8: one authorization buys one request of one tenant, even when
// two tenants share payTo and price and the payment reaches both at once.
func TestOneAuthorizationOneTenant(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.rebuild(rebuildOpts{dir: `{"tenants":[
	  {"slug":"paid","workerName":"w","priceUsd":"0.01","x402Enabled":true},
	  {"slug":"twin","workerName":"w","priceUsd":"0.01","x402Enabled":true}]}`})
	for round := 0; round < 10; round++ {
		hdr := e.pay(target, 2, localfacilitator.SignOptions{})
		var wg sync.WaitGroup
		codes := make([]int, 2)
		for i, tgt := range []string{target, "http://gw.local/t/twin/rows?limit=2"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes[i] = e.do(tgt, hdr).Code
			}()
		}
		wg.Wait()
		ok := 0
		for _, c := range codes {
			if c == 200 {
				ok++
			} else {
				require.Contains(t, []int{409, 422}, c)
			}
		}
		require.Equal(t, 1, ok, "round %d: %v", round, codes)
	}
	require.Equal(t, int64(10), e.calls.Load())
	require.Equal(t, int64(10), e.fac.settles.Load())
}

// Finding 8: Go reads JSON keys without case, the signature covers exact
// names: a payment with case-variant or duplicate keys is refused.
func TestCaseVariantKeysRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	sp, err := e.signer.Sign(e.requirement(target), 2, localfacilitator.SignOptions{})
	require.NoError(t, err)
	raw, err := base64.StdEncoding.DecodeString(sp.Value)
	require.NoError(t, err)
	for _, edit := range []func(string) string{
		func(s string) string {
			return strings.Replace(s, `"nonce":`, `"Nonce":"0x`+strings.Repeat("1", 64)+`","nonce":`, 1)
		},
		func(s string) string { return strings.Replace(s, `"nonce":`, `"NONCE":`, 1) },
		func(s string) string {
			return strings.Replace(s, `"payTo":`, `"payto":"0x0000000000000000000000000000000000000001","payTo":`, 1)
		},
		func(s string) string { return strings.Replace(s, `"value":`, `"value":"1","value":`, 1) },
	} {
		bad := edit(string(raw))
		require.NotEqual(t, string(raw), bad)
		h := http.Header{}
		h.Set("PAYMENT-SIGNATURE", base64.StdEncoding.EncodeToString([]byte(bad)))
		rec := e.do(target, h)
		require.Equal(t, 400, rec.Code, bad)
		require.Contains(t, rec.Body.String(), "invalid_payment")
	}
	require.Equal(t, int64(0), e.fac.verifies.Load())
}

// Finding 7: the resource URL is valid UTF-8 whatever the query, so the
// ledger entry written after the money moved cannot be refused for it.
func TestResourceIsValidUTF8(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tgt := "http://gw.local/t/paid/rows?q=%ff"
	req := httptest.NewRequest("GET", tgt, nil)
	req.URL.RawQuery = "q=\xff\xfe"
	req.RequestURI = "/t/paid/rows?q=\xff\xfe"
	rec := httptest.NewRecorder()
	e.d.ServeHTTP(rec, req)
	require.Equal(t, 402, rec.Code)
	pr, err := x402.DecodePaymentRequired(rec.Header().Get("PAYMENT-REQUIRED"))
	require.NoError(t, err)
	require.True(t, utf8.ValidString(pr.Resource.URL), pr.Resource.URL)
	require.Contains(t, pr.Resource.URL, "%FF%FE")
}

// Finding 7: a failed settlement whose ledger write was lost is recovered
// as failed, under its own key, so the payer may pay again afterwards.
func TestRecoveredFailedSettlementDoesNotBlockThePayer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	kvs := memory.NewKV()
	lstore := memory.NewLedger()
	dying := &dyingLedger{Store: lstore, dead: true}
	e.rebuild(rebuildOpts{kv: kvs, lstore: dying})
	e.fac.SettleFn = func(context.Context, x402.FacilitatorRequest) (*x402.SettleResponse, error) {
		return &x402.SettleResponse{Success: false, ErrorReason: "insufficient_funds"}, nil
	}
	hdr := e.pay(target, 2, localfacilitator.SignOptions{})
	require.Equal(t, 402, e.do(target, hdr).Code)
	dying.dead = false
	rep, err := e.stage.Recover(context.Background(), 0)
	require.NoError(t, err)
	require.Len(t, rep.Recovered, 1)
	require.Equal(t, ledger.StatusFailed, rep.Recovered[0].Status)
	require.Contains(t, rep.Recovered[0].IdempotencyKey, "#failed:")
	e.fac.SettleFn = nil
	rec := e.do(target, hdr)
	require.Equal(t, 200, rec.Code, "the payer can pay once it has the funds: %s", rec.Body.String())
}

// settlement_pending is retried once with the same payload; a success then
// settles the payment once.
func TestSettlementPendingRetriedOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	local, err := localfacilitator.New(localfacilitator.Config{})
	require.NoError(t, err)
	var payloads []string
	e.fac.SettleFn = func(ctx context.Context, r x402.FacilitatorRequest) (*x402.SettleResponse, error) {
		payloads = append(payloads, string(r.Payment.Raw))
		if len(payloads) == 1 {
			return &x402.SettleResponse{ErrorReason: x402.ReasonSettlementPending}, nil
		}
		return local.Settle(ctx, r)
	}
	rec := e.do(target, e.pay(target, 2, localfacilitator.SignOptions{}))
	require.Equal(t, 200, rec.Code, rec.Body.String())
	require.Len(t, payloads, 2)
	require.Equal(t, payloads[0], payloads[1])
	es := e.entries()
	require.Len(t, es, 1)
	require.Equal(t, ledger.StatusSettled, es[0].Status)
}

// testScheme is a second scheme, to check that a route offers one accepts
// entry per scheme in its order and that a payment is checked by the
// scheme that claims it.
type testScheme struct{}

func (testScheme) Name() string          { return "test-scheme" }
func (testScheme) Pricing() x402.Pricing { return x402.PricingFixed }
func (testScheme) Requirement(o x402.Offer) (x402.Requirement, error) {
	r, err := exact.New().Requirement(o)
	r.Scheme = "test"
	return r, err
}
func (testScheme) Claims(a x402.Requirement) bool { return a.Scheme == "test" }
func (testScheme) Check(p *x402.Payment, req x402.Requirement, now time.Time) (x402.Grant, error) {
	return x402.Grant{}, x402.ErrInvalidPayment
}

func TestSeveralAcceptsPerRoute(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.rebuild(rebuildOpts{
		mutate: func(c *payment.Config) {
			c.Schemes = []x402.Scheme{exact.New(), testScheme{}}
			c.Extensions = func(x *dispatch.Exchange) x402.Extensions {
				return x402.Extensions{"bazaar": json.RawMessage(`{"routeTemplate":"` + x.Price.Pattern + `"}`)}
			}
			c.Paywall = func(r *http.Request, pr x402.PaymentRequired) (string, []byte, bool) {
				if !strings.Contains(r.Header.Get("Accept"), "text/html") {
					return "", nil, false
				}
				return "text/html; charset=utf-8", []byte("<p>pay " + pr.Accepts[0].Amount + "</p>"), true
			}
		},
		dir: `{"tenants":[{"slug":"paid","workerName":"w","priceUsd":"0.01","x402Enabled":true,
		  "routes":[{"path":"/rows","schemes":["test-scheme","exact"]}]}]}`})
	rec := e.do("http://gw.local/t/paid/rows", nil)
	require.Equal(t, 402, rec.Code)
	pr, err := x402.DecodePaymentRequired(rec.Header().Get("PAYMENT-REQUIRED"))
	require.NoError(t, err)
	require.Len(t, pr.Accepts, 2)
	require.Equal(t, "test", pr.Accepts[0].Scheme, "in the route's order")
	require.Equal(t, "exact", pr.Accepts[1].Scheme)
	require.JSONEq(t, `{"routeTemplate":"/rows"}`, string(pr.Extensions["bazaar"]))
	var v1 x402.PaymentRequiredV1
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &v1))
	require.Len(t, v1.Accepts, 1, "the v1 body keeps only what v1 can express")
	require.Equal(t, "exact", v1.Accepts[0].Scheme)

	h := http.Header{"Accept": {"text/html,application/xhtml+xml"}}
	page := e.do("http://gw.local/t/paid/rows", h)
	require.Equal(t, 402, page.Code)
	require.Equal(t, "<p>pay 10000</p>", page.Body.String())
	require.Equal(t, rec.Header().Get("PAYMENT-REQUIRED"), page.Header().Get("PAYMENT-REQUIRED"))

	// The exact entry still pays.
	sp, err := e.signer.Sign(x402.RequirementFromV2(pr.Accepts[1], pr.Resource), 2, localfacilitator.SignOptions{})
	require.NoError(t, err)
	hdr := http.Header{}
	hdr.Set(sp.Header, sp.Value)
	require.Equal(t, 200, e.do("http://gw.local/t/paid/rows", hdr).Code)
}

// A directory naming a scheme the gateway was not given is refused when
// it is loaded.
func TestCheckDirectory(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.rebuild(rebuildOpts{dir: `{"tenants":[{"slug":"paid","workerName":"w","priceUsd":"0.01","x402Enabled":true,
	  "routes":[{"path":"/llm/*","schemes":["upto"],"maxPriceUsd":"0.5"}]}]}`})
	err := e.stage.CheckDirectory(e.dir)
	require.ErrorContains(t, err, `routes[0].schemes: scheme "upto" is not configured`)
}

// OnSettlement hears every outcome with its scheme, status and charge.
func TestOnSettlement(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	var mu sync.Mutex
	var got []string
	e.rebuild(rebuildOpts{mutate: func(c *payment.Config) {
		c.OnSettlement = func(tenant, scheme, status string, usd decimal.Decimal) {
			mu.Lock()
			got = append(got, tenant+" "+scheme+" "+status+" "+usd.String())
			mu.Unlock()
		}
	}})
	require.Equal(t, 200, e.do(target, e.pay(target, 2, localfacilitator.SignOptions{})).Code)
	e.fac.SettleFn = func(context.Context, x402.FacilitatorRequest) (*x402.SettleResponse, error) {
		return &x402.SettleResponse{Success: false, ErrorReason: "insufficient_funds"}, nil
	}
	require.Equal(t, 402, e.do(target, e.pay(target, 2, localfacilitator.SignOptions{})).Code)
	require.Equal(t, []string{"paid exact settled 0.01", "paid exact failed 0"}, got)
}

// Fifty concurrent requests carrying one Permit2 authorization: exactly one
// is served and settled; the others are refused or replayed, never served
// again.
func TestOnePermit2AuthorizationFiftyRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.rebuild(rebuildOpts{
		mutate: func(c *payment.Config) { c.Schemes = []x402.Scheme{exact.New(), permit2.New()} },
		dir: `{"tenants":[{"slug":"paid","workerName":"w","priceUsd":"0.01","x402Enabled":true,
		  "routes":[{"path":"/rows","schemes":["exact-permit2"]}]}]}`})
	pr := e.challengeOf("http://gw.local/t/paid/rows")
	require.Equal(t, "permit2", pr.Accepts[0].Extra["assetTransferMethod"])
	sp, err := e.signer.SignPermit2(x402.RequirementFromV2(pr.Accepts[0], pr.Resource), localfacilitator.SignOptions{})
	require.NoError(t, err)
	hdr := http.Header{}
	hdr.Set(sp.Header, sp.Value)
	var wg sync.WaitGroup
	codes := make(chan int, 50)
	bodies := make(chan string, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := e.do("http://gw.local/t/paid/rows", hdr)
			codes <- rec.Code
			if rec.Code == 200 && rec.Header().Get("X-Payment-Deduped") == "" {
				bodies <- rec.Body.String()
			}
		}()
	}
	wg.Wait()
	close(codes)
	close(bodies)
	served := 0
	for range bodies {
		served++
	}
	for c := range codes {
		require.Contains(t, []int{200, 409}, c)
	}
	require.Equal(t, 1, served, "one authorization, one served request")
	require.Equal(t, int64(1), e.calls.Load())
	require.Equal(t, int64(1), e.fac.settles.Load())
	require.Len(t, e.entries(), 1)
}
