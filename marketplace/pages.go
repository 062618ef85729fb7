package marketplace

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/tenant"
)

type windowLink struct {
	Name, Label string
	Current     bool
}

var windows = []struct {
	w            metrics.Window
	label, words string
}{
	{metrics.WindowToday, "Today", "today"},
	{metrics.WindowWeek, "This week", "this week"},
	{metrics.WindowOverall, "Overall", "overall"},
}

type homeData struct {
	Site          site
	GeneratedAt   string
	Window        metrics.Window
	WindowLabel   string
	Windows       []windowLink
	Hero          metrics.Hero
	Top           []metrics.TopAPI
	TopN          int
	Refresh       int
	AnalyticsPath string
	Directories   []dirData
}

type dirData struct {
	Name  string
	Calls int64
	APIs  []dirAPI
}

type dirAPI struct {
	Slug      string
	Charges   bool
	FromPrice string
}

// published lists the directory's tenants for analytics, so APIs without
// traffic count as published.
func published(d *tenant.Directory) []metrics.APIInfo {
	ts := d.Tenants()
	out := make([]metrics.APIInfo, len(ts))
	for i, t := range ts {
		out[i] = metrics.APIInfo{APIID: t.Slug, Owner: t.OwnerUserID, Directory: t.Directory}
	}
	return out
}

func (h *Handler) renderHome(ctx context.Context, _ *http.Request, window metrics.Window) (int, []byte, error) {
	now := h.cfg.Now()
	dir := h.cfg.Registry.Load()
	a, err := metrics.BuildMarketplaceAnalytics(ctx, h.cfg.Events, metrics.AnalyticsOptions{
		Window: window, Top: h.cfg.Top, Now: now, Published: published(dir),
	})
	if err != nil {
		return 0, nil, err
	}
	d := homeData{
		Site: h.site(), GeneratedAt: now.UTC().Format("2006-01-02 15:04"),
		Window: window, Hero: a.Hero, Top: a.TopAPIs, TopN: h.cfg.Top,
		Refresh: max(h.cfg.RefreshSeconds, 0), AnalyticsPath: h.cfg.AnalyticsPath,
	}
	for _, wl := range windows {
		d.Windows = append(d.Windows, windowLink{Name: string(wl.w), Label: wl.label, Current: wl.w == window})
		if wl.w == window {
			d.WindowLabel = wl.words
		}
	}
	calls := map[string]int64{}
	for _, r := range a.Directories {
		calls[r.Directory] = r.Calls
	}
	byDir := map[string]*dirData{}
	ts := dir.Tenants()
	for i := range ts {
		t := &ts[i]
		name := t.Directory
		if name == "" {
			name = metrics.DefaultDirectory
		}
		dd, ok := byDir[name]
		if !ok {
			dd = &dirData{Name: name, Calls: calls[name]}
			byDir[name] = dd
		}
		api := dirAPI{Slug: t.Slug, Charges: t.Charges()}
		if api.Charges {
			api.FromPrice = lowestPrice(t).String()
		}
		dd.APIs = append(dd.APIs, api)
	}
	for _, dd := range byDir {
		d.Directories = append(d.Directories, *dd)
	}
	slices.SortFunc(d.Directories, func(x, y dirData) int {
		if x.Calls != y.Calls {
			if x.Calls > y.Calls {
				return -1
			}
			return 1
		}
		return strings.Compare(x.Name, y.Name)
	})
	var buf bytes.Buffer
	if err := h.pages["home"].ExecuteTemplate(&buf, "layout", d); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, buf.Bytes(), nil
}

// lowestPrice is the smallest positive price a charging tenant asks: its
// own or a route's.
func lowestPrice(t *tenant.Tenant) decimal.Decimal {
	var low decimal.Decimal
	consider := func(p decimal.Decimal) {
		if p.IsPositive() && (low.IsZero() || p.LessThan(low)) {
			low = p
		}
	}
	consider(t.PriceUSD)
	for i := range t.Routes {
		r := &t.Routes[i]
		p := t.PriceUSD
		if r.PriceUSD != nil {
			p = *r.PriceUSD
		}
		consider(p)
	}
	return low
}

type apiData struct {
	Site        site
	GeneratedAt string
	API         apiInfo
	Week        weekStats
	Routes      []routeRow
	Curl        string
	PayClient   string
	Chart       chart
}

type apiInfo struct {
	Slug, Directory, Owner string
	X402, Charges          bool
	Price                  string
	Schemes                []string
	BaseURL                string
}

type weekStats struct {
	Calls   int64
	Callers int
	Revenue string
}

type routeRow struct {
	Method, Path, Price, MaxPrice string
	Charges                       bool
	Schemes                       []string
	Description, MimeType         string
}

func (h *Handler) renderAPI(ctx context.Context, t *tenant.Tenant) (int, []byte, error) {
	now := h.cfg.Now()
	base := originToken + "/t/" + t.Slug
	schemes := t.Schemes
	if len(schemes) == 0 {
		schemes = []string{tenant.DefaultScheme}
	}
	d := apiData{
		Site: h.site(), GeneratedAt: now.UTC().Format("2006-01-02 15:04"),
		API: apiInfo{
			Slug: t.Slug, Directory: t.Directory, Owner: t.OwnerUserID,
			X402: t.X402Enabled, Charges: t.X402Enabled && t.PriceUSD.IsPositive(),
			Price: t.PriceUSD.String(), Schemes: schemes, BaseURL: base,
		},
	}
	if d.API.Directory == "" {
		d.API.Directory = metrics.DefaultDirectory
	}
	example := "/"
	exampleSet := false
	for i := range t.Routes {
		rt := &t.Routes[i]
		p := t.PriceFor(rt.Method, examplePath(rt))
		row := routeRow{
			Method: rt.Method, Path: rt.Path, Charges: p.Charges, Price: p.PriceUSD.String(),
			Schemes: p.Schemes, Description: rt.Description, MimeType: rt.MimeType,
		}
		if row.Method == "" {
			row.Method = "ANY"
		}
		if p.Route != rt {
			// Another route shadows this one for its example path: price
			// the route itself.
			row.Charges = t.X402Enabled && effectivePrice(t, rt).IsPositive()
			row.Price = effectivePrice(t, rt).String()
		}
		if rt.MaxPriceUSD != nil && !rt.MaxPriceUSD.Equal(effectivePrice(t, rt)) {
			row.MaxPrice = rt.MaxPriceUSD.String()
		}
		d.Routes = append(d.Routes, row)
		if !exampleSet && row.Charges && (rt.Method == "" || rt.Method == http.MethodGet) {
			example, exampleSet = examplePath(rt), true
		}
	}
	d.Routes = append(d.Routes, routeRow{
		Method: "ANY", Path: "any other path", Charges: d.API.Charges, Price: t.PriceUSD.String(), Schemes: schemes,
		Description: "the API's own price",
	})
	d.Curl = "curl -i '" + shellQuoteFree(base+example) + "'"
	d.PayClient = "go run ./examples/payclient -url '" + shellQuoteFree(base+example) + "'"

	from := metrics.HourOf(now).Add(-23 * time.Hour)
	rollups, err := h.cfg.Events.Rollups(ctx, metrics.RollupQuery{From: metrics.HourOf(now).AddDate(0, 0, -7), To: metrics.HourOf(now).Add(time.Hour)})
	if err != nil {
		return 0, nil, err
	}
	mine := rollups[:0]
	for _, ru := range rollups {
		if ru.APIID == t.Slug {
			mine = append(mine, ru)
		}
	}
	snap, err := metrics.BuildWindowSnapshot(metrics.WindowWeek, now, mine, nil)
	if err != nil {
		return 0, nil, err
	}
	d.Week.Revenue = "0"
	for _, a := range snap.APIs {
		if a.APIID == t.Slug {
			d.Week = weekStats{Calls: a.Calls, Callers: a.UniqueCallers, Revenue: metrics.MicrosToUSD(a.RevenueMicros)}
		}
	}
	perHour := make([]int64, 24)
	for _, ru := range mine {
		if i := int(ru.Hour.Sub(from) / time.Hour); i >= 0 && i < 24 {
			perHour[i] += ru.Calls
		}
	}
	d.Chart = newChart(from, perHour)

	var buf bytes.Buffer
	if err := h.pages["api"].ExecuteTemplate(&buf, "layout", d); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, buf.Bytes(), nil
}

func effectivePrice(t *tenant.Tenant, r *tenant.Route) decimal.Decimal {
	if r.PriceUSD != nil {
		return *r.PriceUSD
	}
	return t.PriceUSD
}

// examplePath fills a route pattern with the examples of its discovery
// pathParams, else the parameter's name; a final "*" is dropped.
func examplePath(r *tenant.Route) string {
	var decl struct {
		PathParams map[string]json.RawMessage `json:"pathParams"`
	}
	_ = json.Unmarshal(r.Discovery, &decl)
	segs := strings.Split(strings.TrimPrefix(r.Path, "/"), "/")
	out := segs[:0]
	for i, s := range segs {
		switch {
		case s == "*" && i == len(segs)-1:
			continue
		case strings.HasPrefix(s, ":"):
			name := s[1:]
			v := name
			if raw, ok := decl.PathParams[name]; ok {
				var str string
				var obj struct {
					Example string `json:"example"`
				}
				if json.Unmarshal(raw, &str) == nil && str != "" {
					v = str
				} else if json.Unmarshal(raw, &obj) == nil && obj.Example != "" {
					v = obj.Example
				}
			}
			out = append(out, escapeSegment(v))
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}

// escapeSegment percent-encodes what a path segment cannot hold as is.
func escapeSegment(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// shellQuoteFree makes a URL safe inside single quotes by percent-encoding
// the quote itself.
func shellQuoteFree(s string) string { return strings.ReplaceAll(s, "'", "%27") }
