package marketplace

import (
	"bytes"
	"html/template"
	"io/fs"
	"net/http"
	"strconv"
	"strings"

	"github.com/402claw/dispatcher/x402"
)

// PaywallContentType is the Content-Type of the page Paywall renders.
const PaywallContentType = "text/html; charset=utf-8"

// WantsHTML reports whether a request's Accept header prefers text/html (or
// application/xhtml+xml) to application/json, honouring q-values and the
// most specific matching range: a browser's
// "text/html,application/xhtml+xml,...,*/*;q=0.8" does, curl's "*/*" and an
// API client's "application/json" do not, and neither does a request
// without Accept. Ties go to JSON, the x402 clients' format.
func WantsHTML(r *http.Request) bool {
	accept := r.Header.Values("Accept")
	if len(accept) == 0 {
		return false
	}
	ranges := parseAccept(strings.Join(accept, ","))
	html := max(quality(ranges, "text", "html"), quality(ranges, "application", "xhtml+xml"))
	json := quality(ranges, "application", "json")
	return html > json
}

type mediaRange struct {
	typ, sub string
	q        int // thousandths
}

// maxAcceptRanges bounds the work one Accept header can cause.
const maxAcceptRanges = 64

// parseAccept reads media ranges with their q-values; malformed ranges are
// skipped, and a malformed q counts as 0 (RFC 9110 allows three decimals).
func parseAccept(s string) []mediaRange {
	var out []mediaRange
	for part := range strings.SplitSeq(s, ",") {
		if len(out) >= maxAcceptRanges {
			break
		}
		params := strings.Split(part, ";")
		mt := strings.ToLower(strings.TrimSpace(params[0]))
		typ, sub, ok := strings.Cut(mt, "/")
		if !ok || typ == "" || sub == "" || (typ == "*" && sub != "*") {
			continue
		}
		q := 1000
		for _, p := range params[1:] {
			k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
			if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
				q = parseQ(strings.TrimSpace(v))
			}
		}
		out = append(out, mediaRange{typ: typ, sub: sub, q: q})
	}
	return out
}

// parseQ parses "0", "0.5", "1.000" into thousandths; anything else is 0.
func parseQ(v string) int {
	if v == "" || len(v) > 5 {
		return 0
	}
	whole, frac, _ := strings.Cut(v, ".")
	if (whole != "0" && whole != "1") || len(frac) > 3 {
		return 0
	}
	n := 0
	for i := 0; i < 3; i++ {
		n *= 10
		if i < len(frac) {
			c := frac[i]
			if c < '0' || c > '9' {
				return 0
			}
			n += int(c - '0')
		}
	}
	if whole == "1" {
		if n != 0 {
			return 0
		}
		return 1000
	}
	return n
}

// quality is the q of the most specific range matching typ/sub (exact,
// then typ/*, then */*); 0 when none matches.
func quality(ranges []mediaRange, typ, sub string) int {
	best, spec := 0, -1
	for _, r := range ranges {
		s := -1
		switch {
		case r.typ == typ && r.sub == sub:
			s = 2
		case r.typ == typ && r.sub == "*":
			s = 1
		case r.typ == "*" && r.sub == "*":
			s = 0
		}
		if s < 0 {
			continue
		}
		if s > spec || s == spec && r.q > best {
			best, spec = r.q, s
		}
	}
	return best
}

var paywallTemplate = template.Must(template.New("paywall.html").ParseFS(files, "templates/paywall.html"))

var paywallCSS = func() template.CSS {
	b, err := fs.ReadFile(files, "static/marketplace.css")
	if err != nil {
		panic(err)
	}
	return template.CSS(b) // our own embedded stylesheet, not input
}()

type paywallData struct {
	CSS                             template.CSS
	Resource, Description, MimeType string
	Error                           string
	Offers                          []paywallOffer
	PayClient                       string
}

type paywallOffer struct {
	Scheme, Note         string
	Price                string
	Asset, AssetName     string
	Network, NetworkName string
	PayTo                string
	MaxTimeoutSeconds    int
}

// Paywall renders the 402 challenge pr as an HTML page for a person: what
// the resource is, what it costs in which asset on which network (amounts
// of a network's known USDC in dollars, others in atomic units), who is
// paid, and how to pay with an x402 client or this project's example
// client. The page is self-contained (inline stylesheet, no script, no
// external resource). The payment stage serves it with the same 402 status
// and PAYMENT-REQUIRED header when WantsHTML(r) is true.
func Paywall(pr x402.PaymentRequired) []byte {
	d := paywallData{
		CSS: paywallCSS, Resource: pr.Resource.URL, Description: pr.Resource.Description,
		MimeType: pr.Resource.MimeType, Error: pr.Error,
		PayClient: "go run ./examples/payclient -url '" + shellQuoteFree(pr.Resource.URL) + "'",
	}
	for _, a := range pr.Accepts {
		o := paywallOffer{Scheme: a.Scheme, Asset: a.Asset, Network: a.Network, PayTo: a.PayTo, MaxTimeoutSeconds: a.MaxTimeoutSeconds}
		o.Price, o.AssetName = price(a)
		o.NetworkName = networkName(a.Network)
		switch {
		case a.Scheme == "upto":
			o.Note = "at most; you pay what the answer costs"
		case a.Scheme == "batch-settlement":
			o.Note = "per request, from a prepaid channel"
		case a.Extra["assetTransferMethod"] == "permit2":
			o.Note = "Permit2"
		}
		d.Offers = append(d.Offers, o)
	}
	var buf bytes.Buffer
	if err := paywallTemplate.Execute(&buf, d); err != nil {
		// Only a template bug gets here; still say something useful.
		return []byte("<!doctype html><title>Payment required</title><h1>402 Payment required</h1><p>" +
			template.HTMLEscapeString(pr.Resource.URL) + "</p>")
	}
	return buf.Bytes()
}

// price formats an amount: dollars for a network's known USDC, atomic
// units otherwise.
func price(a x402.PaymentRequirements) (amount, asset string) {
	if nw, err := x402.LookupNetwork(a.Network); err == nil && strings.EqualFold(nw.USDC.Address, a.Asset) {
		if d, err := x402.FromAtomicUnits(a.Amount, nw.USDC.Decimals); err == nil {
			return "$" + d.String(), "USDC"
		}
	}
	return a.Amount + " units", "token"
}

func networkName(id string) string {
	switch x402.NormalizeNetwork(id) {
	case x402.NetworkBaseSepolia:
		return "Base Sepolia (testnet)"
	case x402.NetworkBase:
		return "Base"
	}
	if strings.HasPrefix(id, "eip155:") {
		return "EVM chain " + strconv.Quote(strings.TrimPrefix(id, "eip155:"))
	}
	return "network"
}
