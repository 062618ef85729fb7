package demo

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/ops"
)

// DatasetWorker is the built-in CSV worker: the demo CSV API generalised to
// uploaded data sets (ops.Datasets). Each data set is served as its own
// API, by name: a tenant whose workerName is "csv:<name>" is served the
// data set <name> (route such names to it with Fetcher).
//
// Routes of one data set:
//
//	GET /            index: rows, columns (and which are numeric), parameters
//	GET /rows        rows as JSON {"rows":[{column: value}],"total","limit","offset"} or CSV
//	GET /rows/{id}   one row: by the "id" column when there is one, else by row number from 1
//
// with the filters of ParseDatasetQuery. Numeric columns are JSON numbers,
// the rest strings. A parsed data set is cached and re-read only when the
// store's digest of it changes (one metadata read per request), so a
// re-upload is served at once, on every replica.
type DatasetWorker struct {
	store ops.Datasets
	mu    sync.Mutex
	cache map[string]*cachedTable
}

type cachedTable struct {
	mu    sync.Mutex // held while (re)loading
	sha   string
	table *ops.Table
	byID  map[string]int
}

// NewDatasetWorker returns the CSV worker over store.
func NewDatasetWorker(store ops.Datasets) *DatasetWorker {
	return &DatasetWorker{store: store, cache: map[string]*cachedTable{}}
}

// Handler returns the API of the data set called name.
func (dw *DatasetWorker) Handler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { dw.serve(w, r, name) })
}

// errNoDataset is answered 404 by the worker.
var errNoDataset = errors.New("no such data set")

// table returns a snapshot of the parsed data set, from the cache when its
// digest is unchanged.
func (dw *DatasetWorker) table(ctx context.Context, name string) (*cachedTable, error) {
	st, err := dw.store.StatDataset(ctx, name)
	if errors.Is(err, ops.ErrNotFound) {
		dw.mu.Lock()
		delete(dw.cache, name) // a removed data set leaves no parsed copy behind
		dw.mu.Unlock()
		return nil, errNoDataset
	}
	if err != nil {
		return nil, err
	}
	dw.mu.Lock()
	c := dw.cache[name]
	if c == nil {
		c = &cachedTable{}
		dw.cache[name] = c
	}
	dw.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.table != nil && c.sha == st.SHA256 {
		return &cachedTable{sha: c.sha, table: c.table, byID: c.byID}, nil
	}
	ds, err := dw.store.GetDataset(ctx, name)
	if errors.Is(err, ops.ErrNotFound) {
		return nil, errNoDataset
	}
	if err != nil {
		return nil, err
	}
	t, err := ops.ParseTable(ds.Data)
	if err != nil {
		return nil, fmt.Errorf("data set %q no longer parses: %w", name, err)
	}
	c.table, c.sha, c.byID = t, ds.SHA256, nil
	for i, col := range t.Columns {
		if strings.EqualFold(col, "id") {
			c.byID = make(map[string]int, len(t.Rows))
			for j, row := range t.Rows {
				if _, dup := c.byID[row[i]]; !dup {
					c.byID[row[i]] = j
				}
			}
			break
		}
	}
	// Return a snapshot: a later reload replaces the fields, not this copy.
	snap := &cachedTable{sha: c.sha, table: c.table, byID: c.byID}
	return snap, nil
}

func (dw *DatasetWorker) serve(w http.ResponseWriter, r *http.Request, name string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed here", "")
		return
	}
	c, err := dw.table(r.Context(), name)
	if errors.Is(err, errNoDataset) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no data set %q", name), "")
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal_error", "the data set could not be read", "")
		return
	}
	t, byID := c.table, c.byID
	path := r.URL.Path
	switch {
	case path == "/" || path == "":
		dw.index(w, name, t)
	case path == "/rows":
		listRows(w, r, t)
	case strings.HasPrefix(path, "/rows/") && !strings.Contains(path[len("/rows/"):], "/"):
		oneRow(w, r, t, byID, path[len("/rows/"):])
	default:
		writeError(w, http.StatusNotFound, "not_found", "no route "+clip(path), "")
	}
}

type columnDoc struct {
	Name    string `json:"name"`
	Numeric bool   `json:"numeric"`
}

func (dw *DatasetWorker) index(w http.ResponseWriter, name string, t *ops.Table) {
	cols := make([]columnDoc, len(t.Columns))
	params := []string{"q", "limit", "offset", "format"}
	for i, c := range t.Columns {
		cols[i] = columnDoc{c, t.Numeric[i]}
		if t.Numeric[i] {
			params = append(params, "min_"+c, "max_"+c)
		}
		if reservedParams[c] {
			params = append(params, "col."+c)
		} else {
			params = append(params, c)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"name":       name,
		"rows":       len(t.Rows),
		"columns":    cols,
		"formats":    []string{"application/json", "text/csv"},
		"parameters": params,
		"routes": []routeDoc{
			{"GET", "/rows", "rows; filter by column, numeric bounds, q, paging"},
			{"GET", "/rows/{id}", "one row, by its id column or row number"},
		},
	})
}

func listRows(w http.ResponseWriter, r *http.Request, t *ops.Table) {
	q, err := ParseDatasetQuery(r.URL.Query(), t)
	if err != nil {
		writeParamError(w, err)
		return
	}
	var matched [][]string
	for _, row := range t.Rows {
		if q.match(t, row) {
			matched = append(matched, row)
		}
	}
	page := matched[min(q.Offset, len(matched)):min(q.Offset+q.Limit, len(matched))]
	w.Header().Set("X-Total-Count", strconv.Itoa(len(matched)))
	if q.Format == "csv" || (q.Format == "" && WantsCSV(r.Header.Get("Accept"))) {
		writeTableCSV(w, t.Columns, page)
		return
	}
	rows := make([]json.RawMessage, len(page))
	for i, row := range page {
		rows[i] = rowObject(t, row)
	}
	writeJSON(w, http.StatusOK, struct {
		Rows   []json.RawMessage `json:"rows"`
		Total  int               `json:"total"`
		Limit  int               `json:"limit"`
		Offset int               `json:"offset"`
	}{rows, len(matched), q.Limit, q.Offset})
}

func oneRow(w http.ResponseWriter, r *http.Request, t *ops.Table, byID map[string]int, id string) {
	i, ok := -1, false
	if byID != nil {
		i, ok = byID[id]
	} else if n, err := strconv.Atoi(id); err == nil && n >= 1 && n <= len(t.Rows) {
		i, ok = n-1, true
	}
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no row %q", clip(id)), "")
		return
	}
	format := ""
	if s, ok := first(r.URL.Query(), "format"); ok {
		format = strings.ToLower(s)
	}
	if format == "csv" || (format != "json" && WantsCSV(r.Header.Get("Accept"))) {
		writeTableCSV(w, t.Columns, t.Rows[i:i+1])
		return
	}
	writeJSON(w, http.StatusOK, rowObject(t, t.Rows[i]))
}

// rowObject encodes a row as a JSON object in column order: numeric
// columns as numbers (an empty field as null), the rest as strings.
func rowObject(t *ops.Table, row []string) json.RawMessage {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, c := range t.Columns {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(c)
		b.Write(k)
		b.WriteByte(':')
		switch {
		case t.Numeric[i] && row[i] == "":
			b.WriteString("null")
		case t.Numeric[i]:
			b.WriteString(row[i]) // ParseTable checked it is a JSON number
		default:
			v, _ := json.Marshal(row[i])
			b.Write(v)
		}
	}
	b.WriteByte('}')
	return b.Bytes()
}

func writeTableCSV(w http.ResponseWriter, header []string, rows [][]string) {
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	_ = cw.Write(header)
	_ = cw.WriteAll(rows)
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

// Fetcher returns a dispatch.Fetcher that serves worker names of the form
// "csv:<name>" with this worker (in process, with the limits and
// buffering of dispatch.HandlerFetcher) and every other name with
// fallback. A nil fallback answers other names ErrWorkerNotFound.
func (dw *DatasetWorker) Fetcher(fallback dispatch.Fetcher) dispatch.Fetcher {
	return &datasetFetcher{dw: dw, handlers: dispatch.NewHandlerFetcher(nil), fallback: fallback}
}

type datasetFetcher struct {
	dw       *DatasetWorker
	handlers *dispatch.HandlerFetcher
	fallback dispatch.Fetcher
}

// Fetch implements dispatch.Fetcher.
func (f *datasetFetcher) Fetch(ctx context.Context, req *http.Request, p *dispatch.Payload) (*http.Response, error) {
	name, ok := ops.DatasetOf(p.WorkerName)
	if !ok {
		if f.fallback == nil {
			return nil, fmt.Errorf("%w: no worker named %q", dispatch.ErrWorkerNotFound, p.WorkerName)
		}
		return f.fallback.Fetch(ctx, req, p)
	}
	if !f.handlers.Has(p.WorkerName) {
		f.handlers.Set(p.WorkerName, f.dw.Handler(name))
	}
	return f.handlers.Fetch(ctx, req, p)
}
