package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/ops"
	"github.com/402claw/dispatcher/tenant"
)

// maxUpload bounds the file deploy reads (the gateway has its own bound).
const maxUpload = 256 << 20

// route is one --route flag: "METHOD PATH [PRICE]" or "PATH [PRICE]".
type routeFlags []map[string]any

func (r *routeFlags) String() string { return fmt.Sprint(len(*r), " routes") }

func (r *routeFlags) Set(s string) error {
	f := strings.Fields(s)
	if len(f) == 0 || len(f) > 3 {
		return fmt.Errorf("--route %q: want \"METHOD PATH [PRICE]\" or \"PATH [PRICE]\"", s)
	}
	rt := map[string]any{}
	if !strings.HasPrefix(f[0], "/") {
		rt["method"] = strings.ToUpper(f[0])
		f = f[1:]
	}
	if len(f) == 0 || !strings.HasPrefix(f[0], "/") {
		return fmt.Errorf("--route %q: the path must start with /", s)
	}
	rt["path"] = f[0]
	if len(f) == 2 {
		p, err := decimal.NewFromString(f[1])
		if err != nil || p.IsNegative() {
			return fmt.Errorf("--route %q: %q is not a price in USD", s, f[1])
		}
		rt["priceUsd"] = p.String()
	} else if len(f) > 2 {
		return fmt.Errorf("--route %q: too many fields", s)
	}
	*r = append(*r, rt)
	return nil
}

// slugFromFile makes a slug of a file name: "World Cities.csv" -> "world-cities".
func slugFromFile(path string) string {
	base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	var b strings.Builder
	for _, r := range strings.ToLower(base) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "-"):
			b.WriteByte('-')
		}
	}
	s := strings.TrimRight(b.String(), "-")
	if len(s) > 63 {
		s = strings.TrimRight(s[:63], "-")
	}
	return s
}

func (c *cli) deploy(args []string) error {
	fs := flag.NewFlagSet("deploy", flag.ContinueOnError)
	slug := fs.String("slug", "", "tenant slug (default: from the file name)")
	price := fs.String("price", "0", "price of one request in USD (0: free)")
	dir := fs.String("directory", "", "marketplace directory (category)")
	plan := fs.String("plan", "", "plan (free, pro, business, enterprise)")
	payTo := fs.String("pay-to", "", "address paid for this API (default: the platform's)")
	var routes routeFlags
	fs.Var(&routes, "route", `a priced route, "METHOD PATH [PRICE]" (repeatable)`)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("deploy takes one CSV file: claw deploy FILE.csv --slug S --price USD")
	}
	if err := c.needToken(); err != nil {
		return err
	}
	file := pos[0]
	if *slug == "" {
		*slug = slugFromFile(file)
	}
	if !tenant.ValidSlug(*slug) {
		return usagef("slug %q does not match ^[a-z0-9][a-z0-9-]{0,62}$ (set --slug)", *slug)
	}
	p, err := decimal.NewFromString(strings.TrimSpace(*price))
	if err != nil || p.IsNegative() {
		return usagef("--price %q is not a non-negative amount in USD", *price)
	}
	st, err := os.Stat(file)
	if err != nil {
		return fmt.Errorf("%s: %v", file, unwrapPathError(err))
	}
	if st.Size() > maxUpload {
		return fmt.Errorf("%s: %d bytes is more than claw uploads (%d)", file, st.Size(), maxUpload)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("%s: %v", file, unwrapPathError(err))
	}
	// Check the file here first: a bad CSV is one clear line, not an upload.
	table, err := ops.ParseTable(data)
	if err != nil {
		return fmt.Errorf("%s: %s", file, strings.TrimPrefix(err.Error(), "ops: "))
	}

	body := &progressReader{r: bytes.NewReader(data), size: int64(len(data)), name: filepath.Base(file), w: c.errw}
	body.start()
	var info ops.DatasetInfo
	if _, err := c.call(http.MethodPut, "/__platform/datasets/"+*slug, body, "text/csv", &info); err != nil {
		body.abort()
		return fmt.Errorf("uploading %s: %w", file, err)
	}
	body.finish()

	t := map[string]any{
		"slug":        *slug,
		"workerName":  ops.DatasetWorkerPrefix + *slug,
		"priceUsd":    p.String(),
		"x402Enabled": p.IsPositive(),
	}
	if *dir != "" {
		t["directory"] = *dir
	}
	if *plan != "" {
		t["plan"] = *plan
	}
	if *payTo != "" {
		t["payTo"] = *payTo
	}
	if len(routes) > 0 {
		t["routes"] = []map[string]any(routes)
	}
	reqBody, err := jsonBody(t)
	if err != nil {
		return err
	}
	var stored tenant.Tenant
	code, err := c.call(http.MethodPut, "/__platform/tenants/"+*slug, reqBody, "application/json", &stored)
	if err != nil {
		return fmt.Errorf("publishing tenant %s: %w", *slug, err)
	}
	verb := "updated"
	if code == http.StatusCreated {
		verb = "deployed"
	}
	cost := "free"
	if stored.Charges() {
		cost = stored.PriceUSD.String() + " USD a request (x402)"
	}
	fmt.Fprintf(c.out, "%s %s: %d rows, %d columns, %s\n", verb, *slug, len(table.Rows), len(table.Columns), cost)
	fmt.Fprintf(c.out, "  %s/t/%s/rows?limit=5\n", c.base, *slug)
	return nil
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// progressReader reports an upload's progress on one line of w.
type progressReader struct {
	r       *bytes.Reader
	size    int64
	sent    int64
	name    string
	w       io.Writer
	shown   int // last percentage printed
	started bool
}

func (p *progressReader) Size() int64 { return p.size }

// start shows 0% before the first byte goes out.
func (p *progressReader) start() {
	p.started = true
	fmt.Fprintf(p.w, "uploading %s:   0%% (0 B of %s)", p.name, humanBytes(p.size))
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.sent += int64(n)
	pct := 100
	if p.size > 0 {
		pct = int(p.sent * 100 / p.size)
	}
	if pct >= p.shown+10 || (pct == 100 && p.shown != 100) {
		p.shown = pct
		fmt.Fprintf(p.w, "\ruploading %s: %3d%% (%s of %s)", p.name, pct, humanBytes(p.sent), humanBytes(p.size))
	}
	return n, err
}

func (p *progressReader) finish() {
	if p.shown != 100 {
		fmt.Fprintf(p.w, "\ruploading %s: 100%% (%s of %s)", p.name, humanBytes(p.size), humanBytes(p.size))
	}
	fmt.Fprintln(p.w, " done")
}

func (p *progressReader) abort() {
	if p.started {
		fmt.Fprintln(p.w, " failed")
	}
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func (c *cli) tenants(args []string) error {
	fs := flag.NewFlagSet("tenants", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the registry-form JSON")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("tenants takes no arguments")
	}
	if err := c.needToken(); err != nil {
		return err
	}
	var out struct {
		Tenants []tenant.Tenant `json:"tenants"`
	}
	if _, err := c.call(http.MethodGet, "/__platform/tenants", nil, "", &out); err != nil {
		return err
	}
	if *asJSON {
		b, _ := jsonIndent(out)
		fmt.Fprintln(c.out, string(b))
		return nil
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLUG\tWORKER\tPLAN\tPRICE USD\tX402\tOWNER\tDIRECTORY")
	for _, t := range out.Tenants {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\t%s\n", t.Slug, t.WorkerName, t.Plan, t.PriceUSD.String(), t.X402Enabled, dash(t.OwnerUserID), dash(t.Directory))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(c.out, "%d tenants\n", len(out.Tenants))
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *cli) rm(args []string) error {
	fs := flag.NewFlagSet("rm", flag.ContinueOnError)
	keepData := fs.Bool("keep-data", false, "keep the uploaded data set of a csv: tenant")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("rm takes one slug: claw rm SLUG")
	}
	if err := c.needToken(); err != nil {
		return err
	}
	slug := pos[0]
	if !tenant.ValidSlug(slug) {
		return usagef("slug %q does not match ^[a-z0-9][a-z0-9-]{0,62}$", slug)
	}
	var out struct {
		Deleted tenant.Tenant `json:"deleted"`
	}
	if _, err := c.call(http.MethodDelete, "/__platform/tenants/"+slug, nil, "", &out); err != nil {
		return err
	}
	fmt.Fprintf(c.out, "removed tenant %s\n", slug)
	if name, ok := ops.DatasetOf(out.Deleted.WorkerName); ok && !*keepData {
		_, err := c.call(http.MethodDelete, "/__platform/datasets/"+name, nil, "", nil)
		var ae *apiError
		switch {
		case err == nil:
			fmt.Fprintf(c.out, "removed data set %s\n", name)
		case asAPIError(err, &ae) && (ae.Status == http.StatusNotFound || ae.Status == http.StatusConflict):
			fmt.Fprintf(c.out, "kept data set %s (%s)\n", name, ae.Message)
		default:
			return fmt.Errorf("the tenant is removed but its data set is not: %w", err)
		}
	}
	return nil
}

func (c *cli) payments(args []string) error {
	fs := flag.NewFlagSet("payments", flag.ContinueOnError)
	slug := fs.String("tenant", "", "look in this tenant only")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("payments takes one key: claw payments <idempotency key or authorization id>")
	}
	path := "/__platform/payments/" + url.PathEscape(pos[0])
	if *slug != "" {
		path += "?tenant=" + url.QueryEscape(*slug)
	}
	var ps ops.PaymentStatus
	if _, err := c.call(http.MethodGet, path, nil, "", &ps); err != nil {
		var ae *apiError
		if asAPIError(err, &ae) && ae.Status == http.StatusNotFound {
			return fmt.Errorf("no payment with key %q in the ledger", pos[0])
		}
		return err
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	for _, kv := range [][2]string{
		{"status", string(ps.Status)}, {"amount", ps.Amount + " USD"}, {"tenant", ps.Tenant},
		{"transaction", dash(ps.Transaction)}, {"network", ps.Network},
		{"time", ps.Time.UTC().Format(time.RFC3339)}, {"key", ps.IdempotencyKey},
	} {
		fmt.Fprintf(tw, "%s\t%s\n", kv[0], kv[1])
	}
	return tw.Flush()
}

func (c *cli) verify(args []string) error {
	if len(args) != 0 {
		return usagef("verify takes no arguments")
	}
	if err := c.needToken(); err != nil {
		return err
	}
	var v ops.VerifyResult
	if _, err := c.call(http.MethodGet, "/__platform/ledger/verify", nil, "", &v); err != nil {
		return err
	}
	if !v.OK {
		return fmt.Errorf("audit chain BROKEN at record %d after %d good records: %s", v.BrokenAtSeq, v.Records, v.Reason)
	}
	fmt.Fprintf(c.out, "audit chain OK: %d records verified\n", v.Records)
	return nil
}

// topAPI is the part of a leaderboard row that top prints.
type topAPI struct {
	Rank          int     `json:"rank"`
	APIID         string  `json:"apiId"`
	Directory     string  `json:"directory"`
	Calls         int64   `json:"calls"`
	UniqueCallers int     `json:"uniqueCallers"`
	RevenueUSD    string  `json:"revenueUsd"`
	ErrorRate     float64 `json:"errorRate"`
	P95LatencyMs  int64   `json:"p95LatencyMs"`
	Score         float64 `json:"score"`
}

func (c *cli) top(args []string) error {
	fs := flag.NewFlagSet("top", flag.ContinueOnError)
	window := fs.String("window", "today", "today, week or overall")
	n := fs.Int("top", 25, "how many APIs (1-100)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("top takes no arguments")
	}
	switch *window {
	case "today", "week", "overall":
	default:
		return usagef("--window %q is not today, week or overall", *window)
	}
	if *n < 1 || *n > 100 {
		return usagef("--top %d is not from 1 to 100", *n)
	}
	var out struct {
		Window string `json:"window"`
		Hero   struct {
			ActiveAgents  int    `json:"activeAgents"`
			PublishedAPIs int    `json:"publishedApis"`
			Calls         int64  `json:"calls"`
			RevenueUSD    string `json:"revenueUsd"`
		} `json:"hero"`
		TopAPIs []topAPI `json:"topApis"`
	}
	q := url.Values{"window": {*window}, "top": {strconv.Itoa(*n)}}
	if _, err := c.call(http.MethodGet, "/__platform/analytics?"+q.Encode(), nil, "", &out); err != nil {
		return err
	}
	fmt.Fprintf(c.out, "%s: %d calls, %s USD revenue, %d APIs, %d agents\n", out.Window, out.Hero.Calls, out.Hero.RevenueUSD, out.Hero.PublishedAPIs, out.Hero.ActiveAgents)
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "RANK\tAPI\tDIRECTORY\tCALLS\tCALLERS\tREVENUE USD\tERRORS\tP95 MS\tSCORE\t")
	for _, a := range out.TopAPIs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%s\t%.1f%%\t%d\t%.2f\t\n", a.Rank, a.APIID, dash(a.Directory), a.Calls, a.UniqueCallers, a.RevenueUSD, a.ErrorRate*100, a.P95LatencyMs, a.Score)
	}
	return tw.Flush()
}
