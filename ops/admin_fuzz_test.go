package ops_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/402claw/dispatcher/ops"
	"github.com/402claw/dispatcher/tenant"
)

// FuzzParseTenant: a tenant body from a client never panics the parser; a
// parsed tenant has the path's slug and round-trips through a directory;
// every refusal is a validation or bad-body error, never a wider directory.
func FuzzParseTenant(f *testing.F) {
	for _, s := range []string{
		`{"workerName":"w"}`, `{"slug":"a","workerName":"w","priceUsd":0.01}`, `{}`, `[]`, ``,
		`{"workerName":"w"}],"byHost":{"h.example":{"workerName":"x"}}`, `{"workerName":"w","hosts":["A.EXAMPLE:80"]}`,
		`{"workerName":"w","slug":null}`, `{"slug":1}`, `{"workerName":"w","routes":[{"path":"/x"}]}`,
		`{"workerName":"w","priceUsd":"1e400"}`, ` {"workerName":"w"} `, `{"workerName":"w",}`,
	} {
		f.Add(s, "a")
		f.Add(s, "")
	}
	f.Fuzz(func(t *testing.T, body, slug string) {
		if slug != "" && !tenant.ValidSlug(slug) {
			return // the handler refuses such paths before parsing
		}
		tn, err := ops.ParseTenant([]byte(body), slug)
		if err != nil {
			if !errors.Is(err, tenant.ErrInvalidDirectory) && !strings.Contains(err.Error(), "body") {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if slug != "" && tn.Slug != slug {
			t.Fatalf("slug %q, want %q", tn.Slug, slug)
		}
		raw, err := json.Marshal(struct {
			Tenants []tenant.Tenant `json:"tenants"`
		}{[]tenant.Tenant{tn}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tenant.ParseDirectory(raw); err != nil {
			t.Fatalf("a parsed tenant does not parse back: %v (%s)", err, raw)
		}
	})
}

// FuzzParseTable: no upload panics the CSV check, and an accepted table is
// rectangular with unique, non-empty column names.
func FuzzParseTable(f *testing.F) {
	for _, s := range []string{"a,b\n1,2\n", "\xef\xbb\xbfid\n1\n", "", "a,a\n", "a\n\"unterminated\n", "a,b\n1\n",
		"x\n-0.5\n01\n", "n\n1.\n", "a\n\xff\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tb, err := ops.ParseTable(data)
		if err != nil {
			if !errors.Is(err, ops.ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, c := range tb.Columns {
			if c == "" || seen[c] {
				t.Fatalf("bad column %q in %v", c, tb.Columns)
			}
			seen[c] = true
		}
		for _, r := range tb.Rows {
			if len(r) != len(tb.Columns) {
				t.Fatalf("row %v is not as wide as the header %v", r, tb.Columns)
			}
			for i, v := range r {
				if tb.Numeric[i] && v != "" && !json.Valid([]byte(v)) {
					t.Fatalf("numeric field %q is not a JSON number", v)
				}
			}
		}
	})
}
