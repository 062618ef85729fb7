package demo_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/examples/httpserver/demo"
	"github.com/402claw/dispatcher/ops"
)

const peaksCSV = "id,name,country,height_m,first_ascent\n" +
	"1,Everest,NP,8849,1953\n" +
	"2,K2,PK,8611,1954\n" +
	"3,Kangchenjunga,NP,8586,1955\n" +
	"4,Mont Blanc,FR,4806,1786\n" +
	"5,\"Denali, Alaska\",US,6190,\n"

func putDataset(t *testing.T, s ops.Datasets, name, data string) {
	t.Helper()
	ds, _, err := ops.NewDataset(name, "u-1", []byte(data), time.Now())
	require.NoError(t, err)
	require.NoError(t, s.PutDataset(context.Background(), ds))
}

func get(t *testing.T, h http.Handler, target, accept string) (*httptest.ResponseRecorder, map[string]any) {
	t.Helper()
	req := httptest.NewRequest("GET", target, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out map[string]any
	if strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out), rec.Body.String())
	}
	return rec, out
}

func names(out map[string]any) []string {
	var ns []string
	for _, r := range out["rows"].([]any) {
		ns = append(ns, r.(map[string]any)["name"].(string))
	}
	return ns
}

func TestDatasetWorkerFiltersAndPaging(t *testing.T) {
	store := memory.NewDatasets()
	putDataset(t, store, "peaks", peaksCSV)
	h := demo.NewDatasetWorker(store).Handler("peaks")

	rec, out := get(t, h, "/rows", "")
	require.Equal(t, 200, rec.Code)
	require.Equal(t, float64(5), out["total"])
	first := out["rows"].([]any)[0].(map[string]any)
	require.Equal(t, float64(8849), first["height_m"], "numeric columns are JSON numbers")
	require.Equal(t, float64(1), first["id"])
	require.Equal(t, "NP", first["country"])
	last := out["rows"].([]any)[4].(map[string]any)
	require.Nil(t, last["first_ascent"], "an empty numeric field is null")
	require.Equal(t, "Denali, Alaska", last["name"])

	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"country=np", []string{"Everest", "Kangchenjunga"}},
		{"country=fr,us", []string{"Mont Blanc", "Denali, Alaska"}},
		{"min_height_m=8600", []string{"Everest", "K2"}},
		{"min_height_m=5000&max_height_m=8600", []string{"Kangchenjunga", "Denali, Alaska"}},
		{"q=an", []string{"Kangchenjunga", "Mont Blanc"}},
		{"q=alaska", []string{"Denali, Alaska"}},
		{"q=AN&country=NP", []string{"Kangchenjunga"}},
		{"limit=2&offset=1", []string{"K2", "Kangchenjunga"}},
		{"offset=10", nil},
		{"unknown=1", []string{"Everest", "K2", "Kangchenjunga", "Mont Blanc", "Denali, Alaska"}},
	} {
		rec, out := get(t, h, "/rows?"+tc.query, "")
		require.Equal(t, 200, rec.Code, tc.query)
		require.Equal(t, tc.want, names(out), tc.query)
	}
	rec, _ = get(t, h, "/rows?country=NP", "text/csv")
	require.Equal(t, 200, rec.Code)
	require.Equal(t, "2", rec.Header().Get("X-Total-Count"))
	recs, err := csv.NewReader(strings.NewReader(rec.Body.String())).ReadAll()
	require.NoError(t, err)
	require.Equal(t, [][]string{{"id", "name", "country", "height_m", "first_ascent"}, {"1", "Everest", "NP", "8849", "1953"}, {"3", "Kangchenjunga", "NP", "8586", "1955"}}, recs)
	rec, _ = get(t, h, "/rows?format=csv&limit=1", "application/json")
	require.Equal(t, "text/csv; charset=utf-8", rec.Header().Get("Content-Type"))

	for _, q := range []string{"limit=0", "limit=101", "offset=-1", "format=xml", "min_height_m=abc", "min_name=3", "q=" + strings.Repeat("x", 101)} {
		rec, out := get(t, h, "/rows?"+q, "")
		require.Equal(t, 400, rec.Code, q)
		require.Equal(t, "bad_request", out["error"], q)
	}
}

func TestDatasetWorkerRowsIndexAndReload(t *testing.T) {
	store := memory.NewDatasets()
	putDataset(t, store, "peaks", peaksCSV)
	dw := demo.NewDatasetWorker(store)
	h := dw.Handler("peaks")
	rec, out := get(t, h, "/rows/4", "")
	require.Equal(t, 200, rec.Code)
	require.Equal(t, "Mont Blanc", out["name"])
	rec, _ = get(t, h, "/rows/99", "")
	require.Equal(t, 404, rec.Code)
	rec, out = get(t, h, "/", "")
	require.Equal(t, 200, rec.Code)
	require.Equal(t, float64(5), out["rows"])
	require.Contains(t, out["parameters"], "min_height_m")
	rec, _ = get(t, h, "/nope", "")
	require.Equal(t, 404, rec.Code)

	// A re-upload is served at once (the cache follows the digest).
	putDataset(t, store, "peaks", "name,height\nMatterhorn,4478\n")
	rec, out = get(t, h, "/rows", "")
	require.Equal(t, 200, rec.Code)
	require.Equal(t, []string{"Matterhorn"}, names(out))
	// Without an id column, rows are numbered from 1.
	rec, out = get(t, h, "/rows/1", "")
	require.Equal(t, 200, rec.Code)
	require.Equal(t, "Matterhorn", out["name"])

	require.NoError(t, store.DeleteDataset(context.Background(), "peaks"))
	rec, out = get(t, h, "/rows", "")
	require.Equal(t, 404, rec.Code)
	require.Equal(t, "not_found", out["error"])
}

func TestDatasetFetcherRoutesCSVNames(t *testing.T) {
	store := memory.NewDatasets()
	putDataset(t, store, "peaks", peaksCSV)
	other := dispatch.NewHandlerFetcher(map[string]http.Handler{"w-other": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(218)
	})})
	f := demo.NewDatasetWorker(store).Fetcher(other)
	req := httptest.NewRequest("GET", "/rows?limit=1", nil)
	resp, err := f.Fetch(context.Background(), req, &dispatch.Payload{WorkerName: "csv:peaks"})
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode)
	resp.Body.Close()
	resp, err = f.Fetch(context.Background(), req, &dispatch.Payload{WorkerName: "w-other"})
	require.NoError(t, err)
	require.Equal(t, 218, resp.StatusCode)
	resp.Body.Close()
	_, err = demo.NewDatasetWorker(store).Fetcher(nil).Fetch(context.Background(), req, &dispatch.Payload{WorkerName: "w-other"})
	require.ErrorIs(t, err, dispatch.ErrWorkerNotFound)
}

// FuzzParseDatasetQuery: no query panics the parser or the handler, and a
// parsed query is within bounds.
func FuzzParseDatasetQuery(f *testing.F) {
	for _, s := range []string{"", "limit=5&offset=2", "country=np,fr", "min_height_m=1e3", "max_height_m=NaN",
		"q=%00", "col.q=x", "format=csv", "min_name=1", "name=" + strings.Repeat("a,", 60)} {
		f.Add(s)
	}
	table, err := ops.ParseTable([]byte(peaksCSV))
	if err != nil {
		f.Fatal(err)
	}
	store := memory.NewDatasets()
	ds, _, _ := ops.NewDataset("peaks", "", []byte(peaksCSV), time.Now())
	_ = store.PutDataset(context.Background(), ds)
	h := demo.NewDatasetWorker(store).Handler("peaks")
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := demo.ParseDatasetQuery(v, table)
		if err == nil && (q.Limit < 1 || q.Limit > demo.MaxLimit || q.Offset < 0) {
			t.Fatalf("out of bounds: %+v", q)
		}
		req := httptest.NewRequest("GET", "/rows", nil)
		req.URL.RawQuery = raw
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 && rec.Code != 400 {
			t.Fatalf("status %d for %q", rec.Code, raw)
		}
	})
}
