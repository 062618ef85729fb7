package demo_test

import (
	"encoding/csv"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/402claw/dispatcher/examples/httpserver/demo"
)

// FuzzParseQuery feeds raw query strings to the parser and to the handler:
// nothing panics, a parsed query is within bounds, and the handler answers
// 200 with a well-formed body or 400 with a JSON error.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{
		"", "limit=5&offset=10", "country=fr,DE&min_population=1000000&q=san",
		"limit=0", "limit=101", "offset=-1", "country=FRA", "q=%00%ff", "format=csv",
		"enrich=0", "limit=1e3", "country=,,,", "min_population=99999999999999999999",
		"limit=%20%2007", "q=" + strings.Repeat("x", 120), "country=us&country=fr",
	} {
		f.Add(s, "")
		f.Add(s, "text/csv")
	}
	h := demo.NewCSVAPI()
	f.Fuzz(func(t *testing.T, raw, accept string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return // net/http would not get this far with it either
		}
		q, err := demo.ParseQuery(v)
		if err == nil {
			if q.Limit < 1 || q.Limit > demo.MaxLimit || q.Offset < 0 || q.MinPopulation < 0 {
				t.Fatalf("out of bounds: %+v", q)
			}
			for _, c := range q.Countries {
				if len(c) != 2 || strings.ToUpper(c) != c {
					t.Fatalf("country %q", c)
				}
			}
			if q.Text != strings.ToLower(q.Text) {
				t.Fatalf("q not lower-cased: %q", q.Text)
			}
		}

		req := httptest.NewRequest(http.MethodGet, "/premium/rows", nil)
		req.URL.RawQuery = raw
		req.Header.Set("Accept", accept)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch {
		case err != nil:
			if rec.Code != http.StatusBadRequest || !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("bad query %q: %d %s", raw, rec.Code, rec.Body)
			}
		case rec.Code != http.StatusOK:
			t.Fatalf("good query %q: %d %s", raw, rec.Code, rec.Body)
		case strings.HasPrefix(rec.Header().Get("Content-Type"), "text/csv"):
			if _, err := csv.NewReader(rec.Body).ReadAll(); err != nil {
				t.Fatalf("csv: %v", err)
			}
		default:
			var body struct {
				Rows []json.RawMessage `json:"rows"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body.Rows) > q.Limit {
				t.Fatalf("json: %v, %d rows", err, len(body.Rows))
			}
		}
	})
}

// FuzzWantsCSV checks that no Accept header makes the negotiation panic.
func FuzzWantsCSV(f *testing.F) {
	for _, s := range []string{"", "text/csv", "text/csv;q=0.5, application/json;q=0.4", ";;;,,,", "text/csv;q=", "*/*;q=NaN"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, accept string) {
		_ = demo.WantsCSV(accept)
	})
}
