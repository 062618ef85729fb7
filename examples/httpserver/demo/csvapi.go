package demo

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/402claw/dispatcher/dispatch"
)

//go:embed data/cities.csv
var citiesCSV []byte

// City is one row of the data set.
type City struct {
	ID          int     `json:"id"`
	Name        string  `json:"name"`
	Country     string  `json:"country"`
	CountryName string  `json:"country_name"`
	Continent   string  `json:"continent"`
	Population  int64   `json:"population"`
	Lat         float64 `json:"lat"`
	Lon         float64 `json:"lon"`
}

// Row is the view of a city on the free routes.
type Row struct {
	ID         int    `json:"id"`
	Name       string `json:"name"`
	Country    string `json:"country"`
	Population int64  `json:"population"`
}

var (
	freeColumns    = []string{"id", "name", "country", "population"}
	premiumColumns = []string{"id", "name", "country", "country_name", "continent", "population", "lat", "lon"}
)

func (c *City) free() Row {
	return Row{ID: c.ID, Name: c.Name, Country: c.Country, Population: c.Population}
}

func (c *City) record(premium bool) []string {
	id, pop := strconv.Itoa(c.ID), strconv.FormatInt(c.Population, 10)
	if !premium {
		return []string{id, c.Name, c.Country, pop}
	}
	return []string{id, c.Name, c.Country, c.CountryName, c.Continent, pop,
		strconv.FormatFloat(c.Lat, 'f', 2, 64), strconv.FormatFloat(c.Lon, 'f', 2, 64)}
}

// Cities parses the embedded data set.
func Cities() ([]City, error) {
	r := csv.NewReader(bytes.NewReader(citiesCSV))
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("demo: cities.csv: %w", err)
	}
	if !slices.Equal(header, premiumColumns) {
		return nil, fmt.Errorf("demo: cities.csv: header %v, want %v", header, premiumColumns)
	}
	var out []City
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("demo: cities.csv: %w", err)
		}
		var c City
		var errs [4]error
		c.ID, errs[0] = strconv.Atoi(rec[0])
		c.Name, c.Country, c.CountryName, c.Continent = rec[1], rec[2], rec[3], rec[4]
		c.Population, errs[1] = strconv.ParseInt(rec[5], 10, 64)
		c.Lat, errs[2] = strconv.ParseFloat(rec[6], 64)
		c.Lon, errs[3] = strconv.ParseFloat(rec[7], 64)
		if err := errors.Join(errs[:]...); err != nil {
			return nil, fmt.Errorf("demo: cities.csv: row %q: %w", rec[0], err)
		}
		out = append(out, c)
	}
}

// Option configures NewCSVAPI.
type Option func(*api)

// WithEnrichURL sets the URL that enrich=1 calls once per returned row,
// with ?city=NAME&country=CC; its JSON answer is attached to the row.
// Without it enrich=1 is refused with 400.
func WithEnrichURL(u string) Option { return func(a *api) { a.enrichURL = u } }

// WithTransport sets the transport of the worker's outbound requests (nil:
// http.DefaultTransport); they still go through dispatch.OutboundClient.
func WithTransport(rt http.RoundTripper) Option { return func(a *api) { a.transport = rt } }

type api struct {
	cities    []City
	byID      map[int]*City
	enrichURL string
	transport http.RoundTripper
	mux       *http.ServeMux
}

// NewCSVAPI returns the demo CSV API over the embedded data set. It is safe
// for concurrent use. It panics if the embedded data set does not parse,
// which the package's tests rule out.
func NewCSVAPI(opts ...Option) http.Handler {
	cities, err := Cities()
	if err != nil {
		panic(err)
	}
	a := &api{cities: cities, byID: make(map[int]*City, len(cities)), mux: http.NewServeMux()}
	for i := range a.cities {
		a.byID[a.cities[i].ID] = &a.cities[i]
	}
	for _, o := range opts {
		o(a)
	}
	a.mux.HandleFunc("/{$}", get(a.index))
	a.mux.HandleFunc("/rows", get(a.list(false)))
	a.mux.HandleFunc("/premium/rows", get(a.list(true)))
	a.mux.HandleFunc("/rows/{id}", get(a.one(false)))
	a.mux.HandleFunc("/premium/rows/{id}", get(a.one(true)))
	a.mux.HandleFunc("/climate", get(a.climate))
	a.mux.HandleFunc("/metered/rows", get(a.metered))
	a.mux.HandleFunc("/channel/rows", get(a.metered))
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no route "+r.URL.Path, "")
	})
	return a.mux
}

// get admits GET and HEAD (the server drops HEAD bodies) and answers 405
// to the rest.
func get(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed here", "")
			return
		}
		h(w, r)
	}
}

type routeDoc struct {
	Method      string `json:"method"`
	Path        string `json:"path"`
	Description string `json:"description"`
}

func (a *api) index(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"name":        WorkerName,
		"description": "World cities (approximate figures, for demonstration). Free columns on /rows, every column and statistics on /premium/rows.",
		"rows":        len(a.cities),
		"formats":     []string{"application/json", "text/csv"},
		"parameters":  []string{"country", "min_population", "q", "limit", "offset", "format", "enrich"},
		"routes": []routeDoc{
			{"GET", "/rows", "cities: id, name, country, population; filters and paging"},
			{"GET", "/rows/{id}", "one city"},
			{"GET", "/premium/rows", "cities with every column, plus statistics over the match"},
			{"GET", "/premium/rows/{id}", "one city, every column"},
			{"GET", "/climate?city=NAME", "made-up climate figures for a city"},
		},
	})
}

// match returns the cities q selects, in id order.
func (a *api) match(q Query) []*City {
	out := make([]*City, 0, 32)
	for i := range a.cities {
		c := &a.cities[i]
		if len(q.Countries) > 0 && !slices.Contains(q.Countries, c.Country) {
			continue
		}
		if c.Population < q.MinPopulation {
			continue
		}
		if q.Text != "" && !strings.Contains(strings.ToLower(c.Name), q.Text) {
			continue
		}
		out = append(out, c)
	}
	return out
}

// Stats summarises the population of the cities a premium query matched.
type Stats struct {
	Count            int            `json:"count"`
	PopulationSum    int64          `json:"population_sum"`
	PopulationMean   float64        `json:"population_mean"`
	PopulationMedian float64        `json:"population_median"`
	CountryCount     int            `json:"country_count"`
	ByContinent      map[string]int `json:"by_continent"`
	Largest          *Row           `json:"largest,omitempty"`
}

func stats(cities []*City) Stats {
	s := Stats{Count: len(cities), ByContinent: map[string]int{}}
	if len(cities) == 0 {
		return s
	}
	pops := make([]int64, len(cities))
	countries := map[string]bool{}
	var largest *City
	for i, c := range cities {
		pops[i] = c.Population
		s.PopulationSum += c.Population
		s.ByContinent[c.Continent]++
		countries[c.Country] = true
		if largest == nil || c.Population > largest.Population {
			largest = c
		}
	}
	slices.Sort(pops)
	if n := len(pops); n%2 == 1 {
		s.PopulationMedian = float64(pops[n/2])
	} else {
		s.PopulationMedian = float64(pops[n/2-1]+pops[n/2]) / 2
	}
	s.PopulationMean = math.Round(float64(s.PopulationSum)/float64(len(pops))*100) / 100
	s.CountryCount = len(countries)
	l := largest.free()
	s.Largest = &l
	return s
}

func (a *api) list(premium bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, err := ParseQuery(r.URL.Query())
		if err != nil {
			writeParamError(w, err)
			return
		}
		matched := a.match(q)
		page := matched[min(q.Offset, len(matched)):min(q.Offset+q.Limit, len(matched))]
		var extra []json.RawMessage
		if q.Enrich {
			if extra, err = a.enrich(r, page); err != nil {
				writeEnrichError(w, err)
				return
			}
		}
		w.Header().Set("X-Total-Count", strconv.Itoa(len(matched)))
		if q.Format == "csv" || (q.Format == "" && WantsCSV(r.Header.Get("Accept"))) {
			writeCSV(w, page, premium, extra)
			return
		}
		body := struct {
			Rows   []any  `json:"rows"`
			Total  int    `json:"total"`
			Limit  int    `json:"limit"`
			Offset int    `json:"offset"`
			Stats  *Stats `json:"stats,omitempty"`
		}{Rows: make([]any, 0, len(page)), Total: len(matched), Limit: q.Limit, Offset: q.Offset}
		for i, c := range page {
			body.Rows = append(body.Rows, rowJSON(c, premium, extra, i))
		}
		if premium {
			s := stats(matched)
			body.Stats = &s
		}
		writeJSON(w, http.StatusOK, body)
	}
}

// MeteredPerRow is what the metered listing charges per row returned, in
// atomic units of a 6-decimal asset (0.0001 USD).
const MeteredPerRow = 100

// metered is the listing priced by use: it reports its charge, the rows it
// returns times MeteredPerRow, in the Settlement-Overrides header, which the
// gateway settles (an upto payment signed for the route's maximum) and
// removes before the client sees the answer.
func (a *api) metered(w http.ResponseWriter, r *http.Request) {
	q, err := ParseQuery(r.URL.Query())
	if err != nil {
		writeParamError(w, err)
		return
	}
	matched := a.match(q)
	page := matched[min(q.Offset, len(matched)):min(q.Offset+q.Limit, len(matched))]
	w.Header().Set("Settlement-Overrides", fmt.Sprintf(`{"amount":"%d"}`, len(page)*MeteredPerRow))
	rows := make([]any, 0, len(page))
	for i, c := range page {
		rows = append(rows, rowJSON(c, false, nil, i))
	}
	writeJSON(w, http.StatusOK, map[string]any{"rows": rows, "total": len(matched), "chargedRows": len(page)})
}

func rowJSON(c *City, premium bool, extra []json.RawMessage, i int) any {
	if extra == nil {
		if premium {
			return c
		}
		return c.free()
	}
	if premium {
		return struct {
			*City
			Enrichment json.RawMessage `json:"enrichment"`
		}{c, extra[i]}
	}
	return struct {
		Row
		Enrichment json.RawMessage `json:"enrichment"`
	}{c.free(), extra[i]}
}

func (a *api) one(premium bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		raw := r.PathValue("id")
		id, err := strconv.Atoi(raw)
		if err != nil || id < 0 {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("id %q is not a whole number", clip(raw)), "id")
			return
		}
		c, ok := a.byID[id]
		if !ok {
			writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no row with id %d", id), "")
			return
		}
		format := ""
		if s, ok := first(r.URL.Query(), "format"); ok {
			format = strings.ToLower(s)
		}
		if format == "csv" || (format != "json" && WantsCSV(r.Header.Get("Accept"))) {
			writeCSV(w, []*City{c}, premium, nil)
			return
		}
		writeJSON(w, http.StatusOK, rowJSON(c, premium, nil, 0))
	}
}

// climate answers made-up, deterministic climate figures for a city of the
// data set, derived from its latitude: a cheap second API for the demo.
func (a *api) climate(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimSpace(r.URL.Query().Get("city"))
	if name == "" {
		writeError(w, http.StatusBadRequest, "bad_request", "city is required", "city")
		return
	}
	var c *City
	for i := range a.cities {
		if strings.EqualFold(a.cities[i].Name, name) {
			c = &a.cities[i]
			break
		}
	}
	if c == nil {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no city named %q", clip(name)), "")
		return
	}
	h := fnv.New32a()
	_, _ = io.WriteString(h, c.Name)
	jitter := float64(h.Sum32()%40)/10 - 2 // -2.0 .. +1.9
	lat := math.Abs(c.Lat)
	hemisphere := "north"
	if c.Lat < 0 {
		hemisphere = "south"
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"city":              c.Name,
		"country":           c.Country,
		"mean_temp_c":       math.Round((28-0.45*lat+jitter)*10) / 10,
		"annual_rain_mm":    400 + int(h.Sum32()%1800),
		"sunshine_hours":    1400 + int((90-lat)*14) + int(h.Sum32()%300),
		"hemisphere":        hemisphere,
		"figures_are_fake":  true,
		"generated_for_row": c.ID,
	})
}

// errEnrichDisabled refuses enrich=1 on a worker without an enrichment URL.
var errEnrichDisabled = &ParamError{Param: "enrich", Message: "enrichment is not configured on this worker"}

// maxEnrichBody bounds one enrichment answer.
const maxEnrichBody = 64 << 10

// enrich makes one outbound request per row through the budgeted client
// and returns the answers, in order.
func (a *api) enrich(r *http.Request, rows []*City) ([]json.RawMessage, error) {
	if a.enrichURL == "" {
		return nil, errEnrichDisabled
	}
	ctx := outboundContext(r)
	client := dispatch.OutboundClient(ctx, a.transport)
	out := make([]json.RawMessage, len(rows))
	for i, c := range rows {
		u := a.enrichURL + "?" + url.Values{"city": {c.Name}, "country": {c.Country}}.Encode()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxEnrichBody))
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK || !json.Valid(body) {
			return nil, fmt.Errorf("enrichment for %s: status %d", c.Name, resp.StatusCode)
		}
		out[i] = body
	}
	return out, nil
}

// outboundContext returns the context whose budget counts the worker's
// subrequests: the dispatcher's (in process), or one built from the
// X-Dispatch-Subrequests header the HTTP upstream fetcher sends. With
// neither, OutboundClient refuses every request.
func outboundContext(r *http.Request) context.Context {
	ctx := r.Context()
	if _, ok := dispatch.BudgetFrom(ctx); ok {
		return ctx
	}
	if n, err := strconv.Atoi(r.Header.Get("X-Dispatch-Subrequests")); err == nil && n >= 0 {
		return dispatch.WithBudget(ctx, dispatch.NewBudget(n))
	}
	return ctx
}

func writeEnrichError(w http.ResponseWriter, err error) {
	var pe *ParamError
	switch {
	case errors.As(err, &pe):
		writeParamError(w, err)
	case errors.Is(err, dispatch.ErrSubrequestLimit):
		// The signal the HTTP upstream fetcher maps to worker_limit_exceeded.
		w.Header().Set("X-Dispatch-Limit-Exceeded", "1")
		writeError(w, http.StatusServiceUnavailable, "subrequest_limit", "the page needs more subrequests than the plan allows; lower limit", "")
	default:
		writeError(w, http.StatusBadGateway, "enrichment_failed", err.Error(), "")
	}
}

// errorBody is the worker's JSON error, in the gateway's shape plus the
// parameter at fault.
type errorBody struct {
	OK      bool   `json:"ok"`
	Error   string `json:"error"`
	Message string `json:"message"`
	Param   string `json:"param,omitempty"`
}

func writeError(w http.ResponseWriter, status int, code, msg, param string) {
	writeJSON(w, status, errorBody{Error: code, Message: msg, Param: param})
}

func writeParamError(w http.ResponseWriter, err error) {
	var pe *ParamError
	if errors.As(err, &pe) {
		writeError(w, http.StatusBadRequest, "bad_request", pe.Error(), pe.Param)
		return
	}
	writeError(w, http.StatusBadRequest, "bad_request", err.Error(), "")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"ok":false,"error":"internal_error","message":"internal error"}`)
	}
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeCSV(w http.ResponseWriter, rows []*City, premium bool, extra []json.RawMessage) {
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	header := freeColumns
	if premium {
		header = premiumColumns
	}
	if extra != nil {
		header = append(slices.Clone(header), "enrichment")
	}
	_ = cw.Write(header)
	for i, c := range rows {
		rec := c.record(premium)
		if extra != nil {
			rec = append(rec, string(extra[i]))
		}
		_ = cw.Write(rec)
	}
	cw.Flush()
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}
