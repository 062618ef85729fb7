package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// claw runs the command line against the gateway and returns the exit
// code, standard output and standard error.
func claw(t *testing.T, base, token string, args ...string) (int, string, string) {
	t.Helper()
	var out, errw bytes.Buffer
	env := func(k string) string {
		switch k {
		case "CLAW_URL":
			return base
		case "CLAW_TOKEN":
			return token
		}
		return ""
	}
	code := run(args, env, &out, &errw)
	return code, out.String(), errw.String()
}

const citiesCSV = "id,name,country,population\n" +
	"1,Tokyo,JP,37400068\n" +
	"2,Delhi,IN,28514000\n" +
	"3,Shanghai,CN,25582000\n" +
	"4,Osaka,JP,19281000\n"

// TestEndToEnd deploys a CSV with claw, pays for a row with claw pay, sees
// the API in claw top, checks the payment and the chain, removes it with
// claw rm, and the URL then answers 404.
func TestEndToEnd(t *testing.T) {
	g := newTestGateway(t)
	file := filepath.Join(t.TempDir(), "cities.csv")
	require.NoError(t, os.WriteFile(file, []byte(citiesCSV), 0o600))

	code, out, errs := claw(t, g.srv.URL, testAdminToken, "deploy", file, "--slug", "cities", "--price", "0.001", "--directory", "data", "--route", "GET /rows/:id 0.002")
	require.Equal(t, 0, code, "stdout %s stderr %s", out, errs)
	require.Contains(t, out, "deployed cities: 4 rows, 4 columns, 0.001 USD a request")
	require.Contains(t, errs, "uploading cities.csv: 100%")

	// Unpaid: 402.
	require.Equal(t, 402, g.status(t, "/t/cities/rows?country=JP"))

	code, out, errs = claw(t, g.srv.URL, "", "pay", g.srv.URL+"/t/cities/rows?country=JP&limit=1", "--agent", "agent-1")
	require.Equal(t, 0, code, "stdout %s stderr %s", out, errs)
	require.Contains(t, out, "402: paying 1000 atomic units")
	require.Contains(t, out, "settled: success=true")
	require.Contains(t, out, `"name":"Tokyo"`)
	m := regexp.MustCompile(`payment key: (\S+)`).FindStringSubmatch(out)
	require.NotNil(t, m, out)

	// The per-route price of --route.
	code, out, errs = claw(t, g.srv.URL, "", "pay", g.srv.URL+"/t/cities/rows/2", "--agent", "agent-2")
	require.Equal(t, 0, code, "stdout %s stderr %s", out, errs)
	require.Contains(t, out, "402: paying 2000 atomic units")
	require.Contains(t, out, `"name":"Delhi"`)

	// A version 1 client: the JSON body's challenge, paid with X-PAYMENT.
	code, out, errs = claw(t, g.srv.URL, "", "pay", "--v1", g.srv.URL+"/t/cities/rows?country=IN")
	require.Equal(t, 0, code, "stdout %s stderr %s", out, errs)
	require.Contains(t, out, "(exact, x402 v1)")
	require.Contains(t, out, `"name":"Delhi"`)

	code, out, errs = claw(t, g.srv.URL, "", "payments", m[1])
	require.Equal(t, 0, code, errs)
	require.Regexp(t, `status\s+settled`, out)
	require.Regexp(t, `amount\s+0.001 USD`, out)
	require.Regexp(t, `tenant\s+cities`, out)

	code, out, _ = claw(t, g.srv.URL, testAdminToken, "tenants")
	require.Equal(t, 0, code)
	require.Regexp(t, `cities\s+csv:cities\s+free\s+0.001\s+true\s+-\s+data`, out)

	require.Eventually(t, func() bool {
		code, out, _ := claw(t, g.srv.URL, "", "top", "--window", "today")
		return code == 0 && regexp.MustCompile(`1\s+cities\s+data\s+3\s+1\s+0.004`).MatchString(out)
	}, 5*time.Second, 50*time.Millisecond, "cities never showed in claw top")

	code, out, errs = claw(t, g.srv.URL, testAdminToken, "verify")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "audit chain OK")

	code, out, errs = claw(t, g.srv.URL, testAdminToken, "rm", "cities")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "removed tenant cities")
	require.Contains(t, out, "removed data set cities")
	require.Equal(t, 404, g.status(t, "/t/cities/rows"))
	// The payment stays in the ledger.
	code, _, _ = claw(t, g.srv.URL, "", "payments", m[1])
	require.Equal(t, 0, code)
}

// TestOwnerDeploys: an owner's key deploys and removes its own API, never
// another owner's.
func TestOwnerDeploys(t *testing.T) {
	g := newTestGateway(t)
	ctx := t.Context()
	_, err := g.accounts.CreateUser(ctx, "alice", "Alice")
	require.NoError(t, err)
	_, err = g.accounts.CreateUser(ctx, "bob", "Bob")
	require.NoError(t, err)
	_, alice, err := g.accounts.IssueKey(ctx, "alice", "")
	require.NoError(t, err)
	_, bob, err := g.accounts.IssueKey(ctx, "bob", "")
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "My Cities.csv")
	require.NoError(t, os.WriteFile(file, []byte(citiesCSV), 0o600))

	code, out, errs := claw(t, g.srv.URL, alice, "deploy", file)
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "deployed my-cities")
	require.Contains(t, out, "free")
	tn, ok := g.registry.Load().Lookup("my-cities")
	require.True(t, ok)
	require.Equal(t, "alice", tn.OwnerUserID)
	require.Equal(t, 200, g.status(t, "/t/my-cities/rows/2"))

	code, _, errs = claw(t, g.srv.URL, bob, "rm", "my-cities")
	require.Equal(t, 1, code)
	require.Contains(t, errs, "403 forbidden")
	require.Equal(t, 1, strings.Count(errs, "\n"), "one line per error")
	code, _, errs = claw(t, g.srv.URL, bob, "deploy", file, "--slug", "my-cities")
	require.Equal(t, 1, code)
	require.Contains(t, errs, "403 forbidden")
	code, out, _ = claw(t, g.srv.URL, bob, "tenants")
	require.Equal(t, 0, code)
	require.Contains(t, out, "0 tenants")
	code, _, _ = claw(t, g.srv.URL, alice, "rm", "my-cities")
	require.Equal(t, 0, code)
	require.Equal(t, 404, g.status(t, "/t/my-cities/rows/2"))
}
