package demo

import (
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/402claw/dispatcher/ops"
)

// reservedParams are the list parameters of the data set API; a column of
// the same name is filtered with the "col." spelling instead.
var reservedParams = map[string]bool{"q": true, "limit": true, "offset": true, "format": true}

// maxFilters bounds the filters of one request.
const maxFilters = 20

// Filter selects rows by one column: an equality (any of Values,
// case-insensitive), or numeric bounds (Min/Max, inclusive) on a numeric
// column.
type Filter struct {
	Column     int
	ColumnName string
	Values     []string
	Min, Max   *float64
}

// DatasetQuery is a parsed list request on an uploaded data set.
type DatasetQuery struct {
	Filters []Filter
	// Text is matched case-insensitively against every text column.
	Text   string
	Limit  int
	Offset int
	// Format is "csv", "json" or "" (let the Accept header decide).
	Format string
}

// ParseDatasetQuery reads the list parameters of a data set API:
//
//	q=TEXT                   case-insensitive substring of any text column
//	<column>=A,B             the column equals A or B (case-insensitive); spelled
//	                         col.<column>=... for a column named q, limit, offset or format
//	min_<column>=N           numeric columns: at least N
//	max_<column>=N           numeric columns: at most N
//	limit=N, offset=N        paging, as the demo API (1..100, default 20)
//	format=csv|json          overrides the Accept header
//
// Unknown parameters are ignored, as in the demo API; of a repeated
// parameter the first counts. Parameters are read in sorted order, so
// errors are deterministic.
func ParseDatasetQuery(v url.Values, t *ops.Table) (DatasetQuery, error) {
	q := DatasetQuery{Limit: DefaultLimit}
	col := make(map[string]int, len(t.Columns))
	for i, c := range t.Columns {
		col[c] = i
	}
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s, _ := first(v, k)
		switch {
		case k == "q":
			s = strings.TrimSpace(s)
			if len(s) > maxQueryText {
				return DatasetQuery{}, badParam("q", "longer than %d bytes", maxQueryText)
			}
			q.Text = strings.ToLower(s)
		case k == "limit":
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 1 || n > MaxLimit {
				return DatasetQuery{}, badParam("limit", "%q is not a whole number from 1 to %d", clip(s), MaxLimit)
			}
			q.Limit = n
		case k == "offset":
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 0 || n > maxOffset {
				return DatasetQuery{}, badParam("offset", "%q is not a whole number from 0 to %d", clip(s), maxOffset)
			}
			q.Offset = n
		case k == "format":
			switch f := strings.ToLower(strings.TrimSpace(s)); f {
			case "csv", "json":
				q.Format = f
			default:
				return DatasetQuery{}, badParam("format", "%q is neither csv nor json", clip(s))
			}
		default:
			f, ok, err := parseFilter(k, s, col, t)
			if err != nil {
				return DatasetQuery{}, err
			}
			if !ok {
				continue
			}
			if len(q.Filters) == maxFilters {
				return DatasetQuery{}, badParam(k, "at most %d filters", maxFilters)
			}
			q.Filters = append(q.Filters, f)
		}
	}
	return q, nil
}

// parseFilter reads one column filter; ok is false for a parameter that
// names no column (ignored).
func parseFilter(k, s string, col map[string]int, t *ops.Table) (Filter, bool, error) {
	for _, bound := range []string{"min_", "max_"} {
		name, isBound := strings.CutPrefix(k, bound)
		if !isBound {
			continue
		}
		i, ok := col[name]
		if !ok {
			break // perhaps a column really called "min_x"
		}
		if !t.Numeric[i] {
			return Filter{}, false, badParam(k, "column %q is not numeric", clip(name))
		}
		n, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || n != n {
			return Filter{}, false, badParam(k, "%q is not a number", clip(s))
		}
		f := Filter{Column: i, ColumnName: name}
		if bound == "min_" {
			f.Min = &n
		} else {
			f.Max = &n
		}
		return f, true, nil
	}
	name := k
	if n, ok := strings.CutPrefix(k, "col."); ok {
		name = n
	} else if reservedParams[k] {
		return Filter{}, false, nil
	}
	i, ok := col[name]
	if !ok {
		return Filter{}, false, nil
	}
	f := Filter{Column: i, ColumnName: name}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if len(part) > maxQueryText {
			return Filter{}, false, badParam(k, "a value is longer than %d bytes", maxQueryText)
		}
		if len(f.Values) == maxCountries {
			return Filter{}, false, badParam(k, "at most %d values", maxCountries)
		}
		f.Values = append(f.Values, strings.ToLower(part))
	}
	if len(f.Values) == 0 {
		return Filter{}, false, nil
	}
	return f, true, nil
}

// match reports whether row passes every filter and the text search.
func (q *DatasetQuery) match(t *ops.Table, row []string) bool {
	for _, f := range q.Filters {
		v := row[f.Column]
		switch {
		case f.Min != nil || f.Max != nil:
			n, err := strconv.ParseFloat(v, 64)
			if err != nil || (f.Min != nil && n < *f.Min) || (f.Max != nil && n > *f.Max) {
				return false
			}
		default:
			found := false
			for _, want := range f.Values {
				if strings.EqualFold(v, want) {
					found = true
					break
				}
			}
			if !found {
				return false
			}
		}
	}
	if q.Text == "" {
		return true
	}
	for i, v := range row {
		if !t.Numeric[i] && strings.Contains(strings.ToLower(v), q.Text) {
			return true
		}
	}
	return false
}
