package marketplace

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/x402"
)

func TestWantsHTML(t *testing.T) {
	t.Parallel()
	for accept, want := range map[string]bool{
		"": false,
		"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8": true, // Chrome
		"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8":                       true, // Firefox
		"*/*":                                     false, // curl
		"application/json":                        false,
		"application/json, text/plain, */*":       false, // axios
		"text/html":                               true,
		"text/html;q=0.5, application/json":       false,
		"text/html, application/json;q=0.9":       true,
		"text/html;q=0.9, application/json;q=0.9": false, // a tie goes to JSON
		"text/*":                                     true,
		"text/*, application/*;q=0.5":                true,
		"application/*, text/html;q=0.4":             false,
		"text/html;q=0":                              false,
		"application/xhtml+xml":                      true,
		"TEXT/HTML":                                  true,
		"text/html;level=1;q=0.7, */*;q=0.6":         true,
		"text/html;q=abc":                            false, // a malformed q is 0
		"text/html;q=1.5":                            false,
		"text/html;q=0.0001":                         false,
		"*/*;q=0.1, application/json;q=0":            true, // JSON refused outright
		"application/json;q=0, */*;q=0.5, text/html": true,
		"garbage, text/html":                         true,
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if accept != "" {
			r.Header.Set("Accept", accept)
		}
		require.Equal(t, want, WantsHTML(r), "%q", accept)
	}
	// Several Accept header lines are one list.
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Add("Accept", "application/json;q=0.2")
	r.Header.Add("Accept", "text/html")
	require.True(t, WantsHTML(r))
}

func FuzzWantsHTML(f *testing.F) {
	for _, s := range []string{"text/html", "*/*;q=0.8", "application/json;q=0.9, text/*", ";;;,,/", "text/html;q=0.999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, accept string) {
		for _, r := range parseAccept(accept) {
			if r.q < 0 || r.q > 1000 || r.typ == "" || r.sub == "" {
				t.Fatalf("bad range %+v from %q", r, accept)
			}
		}
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("Accept", accept)
		_ = WantsHTML(req)
	})
}

func paymentRequired(t testing.TB) x402.PaymentRequired {
	t.Helper()
	exact, err := x402.NewRequirement(x402.RequirementParams{
		Price: mustDec("0.01"), PayTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
		Resource: "https://api.example.com/t/weather/forecast/Tokyo?units=metric&days=3",
	})
	require.NoError(t, err)
	mainnet, err := x402.NewRequirement(x402.RequirementParams{
		Network: x402.NetworkBase, Price: mustDec("0.5"), PayTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
	})
	require.NoError(t, err)
	upto := mainnet.V2()
	upto.Scheme = "upto"
	return x402.PaymentRequired{
		X402Version: 2, Error: x402.DefaultErrorV2,
		Resource: x402.ResourceInfo{URL: exact.Resource.URL, Description: "7-day forecast <script>alert(1)</script>", MimeType: "application/json"},
		Accepts: []x402.PaymentRequirements{exact.V2(), upto,
			{Scheme: "exact", Network: "eip155:1", Amount: "123", Asset: "0xdead", PayTo: "0xbeef", MaxTimeoutSeconds: 60}},
	}
}

func TestPaywall(t *testing.T) {
	t.Parallel()
	page := string(Paywall(paymentRequired(t)))
	require.True(t, strings.HasPrefix(page, "<!doctype html>"))
	require.Contains(t, page, `<meta name="viewport" content="width=device-width, initial-scale=1">`)
	require.Contains(t, page, `<code id="paywall-resource">https://api.example.com/t/weather/forecast/Tokyo?units=metric&amp;days=3</code>`)
	require.Contains(t, page, `7-day forecast &lt;script&gt;alert(1)&lt;/script&gt;`)
	require.NotContains(t, page, "<script")
	require.Contains(t, page, x402.DefaultErrorV2)
	offers := strings.Count(page, `<tr class="offer">`)
	require.Equal(t, 3, offers)
	require.Contains(t, page, `<span class="price">$0.01</span></td><td>USDC <code class="hide-sm">0x036CbD53842c5426634e7929541eC2318f3dCF7e</code></td><td>Base Sepolia (testnet) <code>eip155:84532</code></td>`)
	require.Contains(t, page, `<code>upto</code> <span class="tag">at most; you pay what the answer costs</span></td><td class="num"><span class="price">$0.5</span></td><td>USDC`)
	require.Contains(t, page, `<td>Base <code>eip155:8453</code></td>`)
	require.Contains(t, page, `<span class="price">123 units</span></td><td>token <code class="hide-sm">0xdead</code></td><td>EVM chain &#34;1&#34; <code>eip155:1</code></td>`)
	require.Contains(t, page, `<pre id="paywall-payclient">go run ./examples/payclient -url &#39;https://api.example.com/t/weather/forecast/Tokyo?units=metric&amp;days=3&#39;</pre>`)
	require.Contains(t, page, "PAYMENT-SIGNATURE")
	require.Contains(t, page, "<style>", "self-contained: the stylesheet is inline")
	require.NotRegexp(t, `(src|href)="(https?:)?//[^"]*\.(css|js)"`, page)

	empty := string(Paywall(x402.PaymentRequired{X402Version: 2}))
	require.Contains(t, empty, "The server offered no way to pay.")
}
