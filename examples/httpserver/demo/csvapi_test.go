package demo_test

import (
	"encoding/csv"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/examples/httpserver/demo"
)

// listBody is the JSON shape of the list routes.
type listBody struct {
	Rows   []map[string]any `json:"rows"`
	Total  int              `json:"total"`
	Limit  int              `json:"limit"`
	Offset int              `json:"offset"`
	Stats  *demo.Stats      `json:"stats"`
}

type errBody struct {
	OK      bool   `json:"ok"`
	Error   string `json:"error"`
	Message string `json:"message"`
	Param   string `json:"param"`
}

func serve(t *testing.T, h http.Handler, method, target, accept string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"), rec.Body.String())
	var v T
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &v), rec.Body.String())
	return v
}

func readCSV(t *testing.T, rec *httptest.ResponseRecorder) [][]string {
	t.Helper()
	require.Equal(t, "text/csv; charset=utf-8", rec.Header().Get("Content-Type"))
	recs, err := csv.NewReader(strings.NewReader(rec.Body.String())).ReadAll()
	require.NoError(t, err)
	return recs
}

func TestDataSet(t *testing.T) {
	t.Parallel()
	cities, err := demo.Cities()
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(cities), 200)
	ids, names := map[int]bool{}, map[string]bool{}
	for i, c := range cities {
		require.Equal(t, i+1, c.ID, "ids are 1..n in order")
		require.False(t, names[c.Name], "duplicate name %s", c.Name)
		ids[c.ID], names[c.Name] = true, true
		require.Len(t, c.Country, 2)
		require.Equal(t, strings.ToUpper(c.Country), c.Country)
		require.NotEmpty(t, c.CountryName)
		require.NotEmpty(t, c.Continent)
		require.Positive(t, c.Population)
		require.True(t, c.Lat >= -90 && c.Lat <= 90 && c.Lon >= -180 && c.Lon <= 180, c.Name)
	}
}

func TestListRoutes(t *testing.T) {
	t.Parallel()
	h := demo.NewCSVAPI()
	all, err := demo.Cities()
	require.NoError(t, err)
	count := func(keep func(demo.City) bool) int {
		n := 0
		for _, c := range all {
			if keep(c) {
				n++
			}
		}
		return n
	}

	cases := []struct {
		name, target, accept string
		check                func(t *testing.T, b listBody)
	}{
		{"defaults", "/rows", "", func(t *testing.T, b listBody) {
			require.Equal(t, len(all), b.Total)
			require.Equal(t, demo.DefaultLimit, b.Limit)
			require.Zero(t, b.Offset)
			require.Len(t, b.Rows, demo.DefaultLimit)
			require.Equal(t, map[string]any{"id": 1.0, "name": "Tokyo", "country": "JP", "population": 13960000.0}, b.Rows[0])
			require.Nil(t, b.Stats, "no stats on the free route")
		}},
		{"paging", "/rows?limit=5&offset=7", "application/json", func(t *testing.T, b listBody) {
			require.Len(t, b.Rows, 5)
			for i, r := range b.Rows {
				require.Equal(t, all[7+i].Name, r["name"])
			}
			require.Equal(t, 5, b.Limit)
			require.Equal(t, 7, b.Offset)
		}},
		{"last page is short", "/rows?limit=100&offset=" + strconv.Itoa(len(all)-3), "", func(t *testing.T, b listBody) {
			require.Len(t, b.Rows, 3)
		}},
		{"offset past the end", "/rows?offset=100000", "", func(t *testing.T, b listBody) {
			require.NotNil(t, b.Rows, `"rows" is [] rather than null`)
			require.Empty(t, b.Rows)
			require.Equal(t, len(all), b.Total)
		}},
		{"country, any case", "/rows?country=fr&limit=100", "", func(t *testing.T, b listBody) {
			require.Equal(t, count(func(c demo.City) bool { return c.Country == "FR" }), b.Total)
			require.Len(t, b.Rows, b.Total)
			for _, r := range b.Rows {
				require.Equal(t, "FR", r["country"])
			}
		}},
		{"several countries", "/rows?country=FR,de&limit=100", "", func(t *testing.T, b listBody) {
			require.Equal(t, count(func(c demo.City) bool { return c.Country == "FR" || c.Country == "DE" }), b.Total)
		}},
		{"min_population", "/rows?min_population=10000000&limit=100", "", func(t *testing.T, b listBody) {
			require.Equal(t, count(func(c demo.City) bool { return c.Population >= 10_000_000 }), b.Total)
			for _, r := range b.Rows {
				require.GreaterOrEqual(t, r["population"].(float64), 1e7)
			}
		}},
		{"substring", "/rows?q=SAN&limit=100", "", func(t *testing.T, b listBody) {
			require.Equal(t, count(func(c demo.City) bool { return strings.Contains(strings.ToLower(c.Name), "san") }), b.Total)
			require.Greater(t, b.Total, 3)
		}},
		{"filters combine", "/rows?country=US&q=san&min_population=1000000", "", func(t *testing.T, b listBody) {
			require.Equal(t, 2, b.Total, "San Antonio and San Diego")
		}},
		{"no match", "/rows?q=atlantis", "", func(t *testing.T, b listBody) {
			require.Zero(t, b.Total)
			require.Empty(t, b.Rows)
		}},
		{"browser accept is JSON", "/rows?limit=1", "text/html,application/xhtml+xml,*/*;q=0.8", func(t *testing.T, b listBody) {
			require.Len(t, b.Rows, 1)
		}},
		{"format=json beats Accept", "/rows?limit=1&format=json", "text/csv", func(t *testing.T, b listBody) {
			require.Len(t, b.Rows, 1)
		}},
		{"premium has every column and stats", "/premium/rows?country=JP&limit=2", "", func(t *testing.T, b listBody) {
			require.Len(t, b.Rows, 2)
			require.Equal(t, map[string]any{"id": 1.0, "name": "Tokyo", "country": "JP", "country_name": "Japan",
				"continent": "Asia", "population": 13960000.0, "lat": 35.68, "lon": 139.69}, b.Rows[0])
			require.NotNil(t, b.Stats)
			n := count(func(c demo.City) bool { return c.Country == "JP" })
			require.Equal(t, n, b.Stats.Count, "stats cover the match, not the page")
			require.Equal(t, map[string]int{"Asia": n}, b.Stats.ByContinent)
			require.Equal(t, 1, b.Stats.CountryCount)
			require.Equal(t, "Tokyo", b.Stats.Largest.Name)
			var sum int64
			for _, c := range all {
				if c.Country == "JP" {
					sum += c.Population
				}
			}
			require.Equal(t, sum, b.Stats.PopulationSum)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			rec := serve(t, h, http.MethodGet, c.target, c.accept)
			require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
			b := decode[listBody](t, rec)
			require.Equal(t, strconv.Itoa(b.Total), rec.Header().Get("X-Total-Count"))
			c.check(t, b)
		})
	}
}

func TestCSVOutput(t *testing.T) {
	t.Parallel()
	h := demo.NewCSVAPI()
	cases := []struct {
		name, target, accept string
		header               []string
		rows                 int
	}{
		{"accept text/csv", "/rows?limit=3", "text/csv", []string{"id", "name", "country", "population"}, 3},
		{"csv preferred by q", "/rows?limit=4", "application/json;q=0.5, text/csv", []string{"id", "name", "country", "population"}, 4},
		{"format=csv", "/rows?country=FR", "", []string{"id", "name", "country", "population"}, 7},
		{"premium", "/premium/rows?limit=2", "text/csv", []string{"id", "name", "country", "country_name", "continent", "population", "lat", "lon"}, 2},
		{"empty page keeps the header", "/rows?q=atlantis", "text/csv", []string{"id", "name", "country", "population"}, 0},
		{"one row", "/premium/rows/1", "text/csv", []string{"id", "name", "country", "country_name", "continent", "population", "lat", "lon"}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			target := c.target
			if c.name == "format=csv" {
				target += "&format=csv"
			}
			rec := serve(t, h, http.MethodGet, target, c.accept)
			require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
			recs := readCSV(t, rec)
			require.Equal(t, c.header, recs[0])
			require.Len(t, recs, 1+c.rows)
		})
	}
	rec := serve(t, h, http.MethodGet, "/premium/rows?q=xi'an", "text/csv")
	recs := readCSV(t, rec)
	require.Equal(t, []string{"Xi'an", "CN", "China", "Asia"}, recs[1][1:5])
	rec = serve(t, h, http.MethodGet, "/rows?q=guatemala", "text/csv")
	require.Contains(t, rec.Body.String(), "Guatemala City,GT,")
}

func TestBadParameters(t *testing.T) {
	t.Parallel()
	h := demo.NewCSVAPI()
	cases := []struct{ target, param string }{
		{"/rows?limit=0", "limit"},
		{"/rows?limit=101", "limit"},
		{"/rows?limit=ten", "limit"},
		{"/rows?limit=", "limit"},
		{"/rows?offset=-1", "offset"},
		{"/rows?offset=1.5", "offset"},
		{"/rows?min_population=-5", "min_population"},
		{"/rows?min_population=lots", "min_population"},
		{"/rows?country=FRA", "country"},
		{"/rows?country=F1", "country"},
		{"/rows?format=xml", "format"},
		{"/rows?enrich=maybe", "enrich"},
		{"/rows?enrich=1", "enrich"}, // no enrichment URL configured
		{"/rows?q=" + strings.Repeat("a", 101), "q"},
		{"/premium/rows?limit=500", "limit"},
		{"/rows/abc", "id"},
	}
	for _, c := range cases {
		t.Run(c.target, func(t *testing.T) {
			t.Parallel()
			for _, accept := range []string{"", "text/csv"} {
				rec := serve(t, h, http.MethodGet, c.target, accept)
				require.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())
				e := decode[errBody](t, rec)
				require.Equal(t, errBody{Error: "bad_request", Message: e.Message, Param: c.param}, e)
				require.NotEmpty(t, e.Message)
			}
		})
	}
}

func TestRowByID(t *testing.T) {
	t.Parallel()
	h := demo.NewCSVAPI()
	rec := serve(t, h, http.MethodGet, "/rows/1", "")
	require.Equal(t, http.StatusOK, rec.Code)
	require.JSONEq(t, `{"id":1,"name":"Tokyo","country":"JP","population":13960000}`, rec.Body.String())

	rec = serve(t, h, http.MethodGet, "/premium/rows/2", "")
	require.Equal(t, http.StatusOK, rec.Code)
	require.JSONEq(t, `{"id":2,"name":"Osaka","country":"JP","country_name":"Japan","continent":"Asia","population":2750000,"lat":34.69,"lon":135.5}`, rec.Body.String())

	for _, target := range []string{"/rows/0", "/rows/99999", "/premium/rows/100000"} {
		rec = serve(t, h, http.MethodGet, target, "")
		require.Equal(t, http.StatusNotFound, rec.Code, target)
		require.Equal(t, "not_found", decode[errBody](t, rec).Error)
	}
}

func TestIndexAndUnknownRoutes(t *testing.T) {
	t.Parallel()
	h := demo.NewCSVAPI()
	rec := serve(t, h, http.MethodGet, "/", "")
	require.Equal(t, http.StatusOK, rec.Code)
	idx := decode[map[string]any](t, rec)
	require.Equal(t, "demo-csv", idx["name"])
	require.NotEmpty(t, idx["routes"])

	rec = serve(t, h, http.MethodGet, "/nope", "")
	require.Equal(t, http.StatusNotFound, rec.Code)
	require.Equal(t, "not_found", decode[errBody](t, rec).Error)

	rec = serve(t, h, http.MethodPost, "/rows", "")
	require.Equal(t, http.StatusMethodNotAllowed, rec.Code)
	require.Equal(t, "GET, HEAD", rec.Header().Get("Allow"))

	rec = serve(t, h, http.MethodHead, "/rows", "")
	require.Equal(t, http.StatusOK, rec.Code)
}

func TestClimate(t *testing.T) {
	t.Parallel()
	h := demo.NewCSVAPI()
	rec := serve(t, h, http.MethodGet, "/climate?city=lyon", "")
	require.Equal(t, http.StatusOK, rec.Code)
	a := decode[map[string]any](t, rec)
	require.Equal(t, "Lyon", a["city"])
	require.Equal(t, "north", a["hemisphere"])
	again := decode[map[string]any](t, serve(t, h, http.MethodGet, "/climate?city=Lyon", ""))
	require.Equal(t, a, again, "deterministic")
	require.Equal(t, http.StatusNotFound, serve(t, h, http.MethodGet, "/climate?city=Atlantis", "").Code)
	require.Equal(t, http.StatusBadRequest, serve(t, h, http.MethodGet, "/climate", "").Code)
}

func TestWantsCSV(t *testing.T) {
	t.Parallel()
	cases := map[string]bool{
		"":                                  false,
		"*/*":                               false,
		"application/json":                  false,
		"text/csv":                          true,
		"TEXT/CSV; charset=utf-8":           true,
		"text/*":                            true,
		"text/csv, application/json":        true,
		"application/json, text/csv;q=0.9":  false,
		"application/json;q=0.5, text/csv":  true,
		"text/csv;q=0":                      false,
		"text/csv;q=bogus":                  false,
		"text/html,*/*;q=0.8":               false,
		"text/csv;q=0.3, */*;q=0.2":         true,
		"application/*;q=0.9, text/csv;q=1": true,
	}
	for accept, want := range cases {
		require.Equal(t, want, demo.WantsCSV(accept), "%q", accept)
	}
}
