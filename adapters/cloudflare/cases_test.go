package cloudflare_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/limits"
	"github.com/402claw/dispatcher/tenant"
)

var update = flag.Bool("update", false, "rewrite the expectations of testdata/cases.json from the Go packages")

// The shared cases: the JS tests of worker/dispatch.js read the same file
// (worker/test/cases.test.mjs), so the port answers what Go answers.
type caseFile struct {
	Comment     string      `json:"comment"`
	Directories []dirCase   `json:"directories"`
	Limits      []limitCase `json:"limits"`
}

type dirCase struct {
	Name    string        `json:"name"`
	Input   string        `json:"input"`
	Valid   *bool         `json:"valid,omitempty"`
	Error   *errorWant    `json:"error,omitempty"`
	Tenants []tenantWant  `json:"tenants,omitempty"`
	Resolve []resolveCase `json:"resolve,omitempty"`
}

// errorWant is the rejected directory's ValidationError; both fields are
// absent for errors of the document as a whole.
type errorWant struct {
	Tenant *string `json:"tenant,omitempty"`
	Field  *string `json:"field,omitempty"`
}

type pair struct {
	CPUMs       int `json:"cpuMs"`
	SubRequests int `json:"subRequests"`
}

type tenantWant struct {
	Slug        string            `json:"slug"`
	WorkerName  string            `json:"workerName"`
	Plan        string            `json:"plan"`
	Hosts       []string          `json:"hosts"`
	PriceUSD    string            `json:"priceUsd"`
	X402Enabled bool              `json:"x402Enabled"`
	UsageLimit  tenant.UsageLimit `json:"usageLimit"`
	SpendLimit  map[string]string `json:"spendLimit"`
	RateLimit   tenant.RateLimit  `json:"rateLimit"`
	OwnerUserID string            `json:"ownerUserId"`
	Directory   string            `json:"directory"`
	PayTo       string            `json:"payTo"`
	Overrides   pair              `json:"overrides"`
	Limits      pair              `json:"limits"`
}

type resolveCase struct {
	Host string       `json:"host"`
	Path string       `json:"path"`
	Want *resolveWant `json:"want,omitempty"`
}

type resolveWant struct {
	Error  string `json:"error,omitempty"`
	Tenant string `json:"tenant,omitempty"`
	Path   string `json:"path,omitempty"`
	ByHost bool   `json:"byHost,omitempty"`
}

type limitCase struct {
	Plan       string `json:"plan"`
	Overrides  pair   `json:"overrides"`
	AllowRaise bool   `json:"allowRaise"`
	Want       *pair  `json:"want,omitempty"`
}

const casesPath = "testdata/cases.json"

func loadCases(t testing.TB) caseFile {
	raw, err := os.ReadFile(casesPath)
	require.NoError(t, err)
	var cf caseFile
	require.NoError(t, json.Unmarshal(raw, &cf))
	return cf
}

// goAnswers fills a case's expectations from the Go packages.
func goAnswers(c dirCase) dirCase {
	out := dirCase{Name: c.Name, Input: c.Input}
	d, err := tenant.ParseDirectory([]byte(c.Input))
	valid := err == nil
	out.Valid = &valid
	if err != nil {
		out.Error = &errorWant{}
		var ve *tenant.ValidationError
		if errors.As(err, &ve) {
			out.Error.Tenant, out.Error.Field = &ve.Tenant, &ve.Field
		}
		// Resolve cases of an invalid directory are kept, unanswered.
		out.Resolve = c.Resolve
		return out
	}
	for _, t := range d.Tenants() {
		l := limits.ResolveDispatchLimits(t.Plan, t.Limits)
		hosts := t.Hosts
		if hosts == nil {
			hosts = []string{}
		}
		out.Tenants = append(out.Tenants, tenantWant{
			Slug: t.Slug, WorkerName: t.WorkerName, Plan: t.Plan, Hosts: hosts,
			PriceUSD: t.PriceUSD.String(), X402Enabled: t.X402Enabled,
			UsageLimit: t.UsageLimit,
			SpendLimit: map[string]string{
				"dailySpendUsd":   t.SpendLimit.DailySpendUSD.String(),
				"monthlySpendUsd": t.SpendLimit.MonthlySpendUSD.String(),
			},
			RateLimit: t.RateLimit, OwnerUserID: t.OwnerUserID, Directory: t.Directory, PayTo: t.PayTo,
			Overrides: pair{t.Limits.CPUMs, t.Limits.SubRequests},
			Limits:    pair{l.CPUMs, l.SubRequests},
		})
	}
	for _, rc := range c.Resolve {
		res, err := d.Resolve(rc.Host, rc.Path)
		w := &resolveWant{}
		switch {
		case errors.Is(err, tenant.ErrBadRequest):
			w.Error = "bad_request"
		case errors.Is(err, tenant.ErrNotFound):
			w.Error = "tenant_not_found"
		case err != nil:
			w.Error = "unexpected: " + err.Error()
		default:
			w.Tenant, w.Path, w.ByHost = res.Tenant.Slug, res.Path, res.ByHost
		}
		out.Resolve = append(out.Resolve, resolveCase{Host: rc.Host, Path: rc.Path, Want: w})
	}
	return out
}

func TestSharedCases(t *testing.T) {
	cf := loadCases(t)
	require.NotEmpty(t, cf.Directories)
	require.NotEmpty(t, cf.Limits)
	got := caseFile{Comment: cf.Comment}
	for _, c := range cf.Directories {
		got.Directories = append(got.Directories, goAnswers(c))
	}
	for _, lc := range cf.Limits {
		l := limits.Policy{AllowRaise: lc.AllowRaise}.Resolve(lc.Plan, limits.Overrides{CPUMs: lc.Overrides.CPUMs, SubRequests: lc.Overrides.SubRequests})
		lc.Want = &pair{l.CPUMs, l.SubRequests}
		got.Limits = append(got.Limits, lc)
	}
	if *update {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", " ")
		require.NoError(t, enc.Encode(got))
		require.NoError(t, os.WriteFile(casesPath, buf.Bytes(), 0o644))
		return
	}
	for i, c := range cf.Directories {
		t.Run(c.Name, func(t *testing.T) {
			require.NotNil(t, c.Valid, "case has no expectations: run with -update")
			require.Equal(t, got.Directories[i], c)
		})
	}
	for i, lc := range cf.Limits {
		require.Equal(t, got.Limits[i], lc, "limits case %d", i)
	}
}

// TestSharedCasesCoverage keeps the table honest: it must hold valid and
// invalid directories of both forms, and resolutions of every outcome.
func TestSharedCasesCoverage(t *testing.T) {
	cf := loadCases(t)
	var valid, invalid, byHost, byPath, notFound, bad int
	for _, c := range cf.Directories {
		if c.Valid != nil && *c.Valid {
			valid++
		} else {
			invalid++
		}
		for _, r := range c.Resolve {
			switch {
			case r.Want == nil:
			case r.Want.Error == "bad_request":
				bad++
			case r.Want.Error == "tenant_not_found":
				notFound++
			case r.Want.ByHost:
				byHost++
			default:
				byPath++
			}
		}
	}
	for name, n := range map[string]int{"valid": valid, "invalid": invalid, "byHost": byHost, "byPath": byPath, "notFound": notFound, "badRequest": bad} {
		require.GreaterOrEqual(t, n, 3, name)
	}
}
