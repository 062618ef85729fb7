// Command cfdeploy deploys one tenant's worker to a Cloudflare Workers for
// Platforms dispatch namespace and records the tenant in a registry-style
// tenant directory ({"tenants":[...]}), the file a gateway loads with
// -tenants and the dispatch worker reads as TENANT_DIRECTORY_JSON.
//
//	cfdeploy -script worker.js -slug acme -plan pro \
//	    -host acme.api.402claw.dev -namespace production -out tenants.json
//
// Credentials come from -account-id / CLOUDFLARE_ACCOUNT_ID and
// -api-token / CLOUDFLARE_API_TOKEN. With -dry-run nothing reaches
// Cloudflare: the upload goes to -api-url, which must then be a loopback
// URL (a local fake of the API), or is only described when -api-url is
// unset; the directory file is written either way.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"

	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/adapters/cloudflare"
	"github.com/402claw/dispatcher/limits"
	"github.com/402claw/dispatcher/tenant"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "cfdeploy:", err)
		}
		os.Exit(2)
	}
}

type options struct {
	script, slug, worker, plan, namespace, out, apiURL, accountID, apiToken, price, compat string
	hosts                                                                                  []string
	cpuMs, subRequests                                                                     int
	x402, dryRun                                                                           bool
}

// TenantRecord is the directory entry cfdeploy writes, in the directory's
// registry form (see package tenant).
type TenantRecord struct {
	Slug        string            `json:"slug"`
	WorkerName  string            `json:"workerName"`
	Plan        string            `json:"plan"`
	Hosts       []string          `json:"hosts,omitempty"`
	PriceUSD    string            `json:"priceUsd,omitempty"`
	X402Enabled bool              `json:"x402Enabled,omitempty"`
	Limits      *limits.Overrides `json:"limits,omitempty"`
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var o options
	fs := flag.NewFlagSet("cfdeploy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.script, "script", "", "path of the tenant worker's ES module (required)")
	fs.StringVar(&o.slug, "slug", "", "tenant slug, ^[a-z0-9][a-z0-9-]{0,62}$ (required)")
	fs.StringVar(&o.worker, "worker-name", "", "script name in the namespace (default tenant-<slug>-worker)")
	fs.StringVar(&o.plan, "plan", "free", "plan: free, pro, business, enterprise, quarantine")
	fs.Func("host", "a host name of the tenant (repeatable)", func(s string) error { o.hosts = append(o.hosts, s); return nil })
	fs.StringVar(&o.price, "price", "", "price per request in USD (exact decimal); sets x402Enabled when positive")
	fs.IntVar(&o.cpuMs, "cpu-ms", 0, "lower the plan's CPU limit (ms)")
	fs.IntVar(&o.subRequests, "subrequests", 0, "lower the plan's subrequest limit")
	fs.StringVar(&o.namespace, "namespace", "production", "dispatch namespace")
	fs.StringVar(&o.out, "out", "tenants.json", "tenant directory file to create or update")
	fs.StringVar(&o.apiURL, "api-url", "", "Cloudflare API base URL (default "+cloudflare.DefaultBaseURL+")")
	fs.StringVar(&o.accountID, "account-id", getenv("CLOUDFLARE_ACCOUNT_ID"), "Cloudflare account id (env CLOUDFLARE_ACCOUNT_ID)")
	fs.StringVar(&o.apiToken, "api-token", "", "Cloudflare API token (env CLOUDFLARE_API_TOKEN)")
	fs.StringVar(&o.compat, "compatibility-date", cloudflare.DefaultCompatibilityDate, "compatibility date of the worker")
	fs.BoolVar(&o.dryRun, "dry-run", false, "do not contact Cloudflare: upload to a loopback -api-url, or only describe the upload")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.apiToken == "" {
		o.apiToken = getenv("CLOUDFLARE_API_TOKEN")
	}
	if o.script == "" || o.slug == "" {
		return errors.New("-script and -slug are required")
	}
	if !tenant.ValidSlug(o.slug) {
		return fmt.Errorf("-slug %q does not match ^[a-z0-9][a-z0-9-]{0,62}$", o.slug)
	}
	if o.worker == "" {
		o.worker = "tenant-" + o.slug + "-worker"
	}
	if o.price != "" {
		d, err := decimal.NewFromString(o.price)
		if err != nil {
			return fmt.Errorf("-price %q is not a decimal number", o.price)
		}
		o.x402 = d.IsPositive()
	}
	module, err := os.ReadFile(o.script)
	if err != nil {
		return err
	}
	rec := TenantRecord{Slug: o.slug, WorkerName: o.worker, Plan: limits.Policy{}.NormalizePlan(o.plan), Hosts: o.hosts, PriceUSD: o.price, X402Enabled: o.x402}
	if o.cpuMs > 0 || o.subRequests > 0 {
		rec.Limits = &limits.Overrides{CPUMs: o.cpuMs, SubRequests: o.subRequests}
	}
	// Build and validate the new directory before anything is uploaded, so
	// a bad slug, host or price never leaves a stray script behind.
	dirJSON, err := mergeDirectory(o.out, rec)
	if err != nil {
		return err
	}
	lim := limits.ResolveDispatchLimits(rec.Plan, limits.Overrides{CPUMs: o.cpuMs, SubRequests: o.subRequests})
	up := cloudflare.UserWorker{
		Namespace: o.namespace, ScriptName: o.worker, Module: module, CompatibilityDate: o.compat,
		Tags: []string{"402claw", "tenant-" + o.slug, "plan-" + rec.Plan},
	}
	switch {
	case o.dryRun && o.apiURL == "":
		fmt.Fprintf(stdout, "dry run: would upload %s (%d bytes) as %q to namespace %q with tags %v\n", o.script, len(module), o.worker, o.namespace, up.Tags)
	default:
		if o.dryRun {
			if err := requireLoopback(o.apiURL); err != nil {
				return err
			}
			if o.accountID == "" {
				o.accountID = "dry-run-account"
			}
			if o.apiToken == "" {
				o.apiToken = "dry-run-token"
			}
		}
		c, err := cloudflare.NewClient(cloudflare.Config{AccountID: o.accountID, APIToken: o.apiToken, BaseURL: o.apiURL})
		if err != nil {
			return err
		}
		s, err := c.UploadUserWorker(ctx, up)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "uploaded %q to namespace %q (etag %s)\n", s.ID, o.namespace, s.ETag)
	}
	if err := writeFileAtomic(o.out, dirJSON); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "tenant %q -> worker %q, plan %s (cpuMs %d, subRequests %d), written to %s\n", o.slug, o.worker, rec.Plan, lim.CPUMs, lim.SubRequests, o.out)
	return nil
}

// mergeDirectory reads the directory file (if any), puts rec in place of
// the tenant with the same slug, and returns the new file, validated by
// tenant.ParseDirectory.
func mergeDirectory(path string, rec TenantRecord) ([]byte, error) {
	var file struct {
		Tenants []json.RawMessage `json:"tenants"`
	}
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		if err := json.Unmarshal(raw, &file); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	mine, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(file.Tenants)+1)
	replaced := false
	for _, t := range file.Tenants {
		var head struct {
			Slug string `json:"slug"`
		}
		_ = json.Unmarshal(t, &head)
		if head.Slug == rec.Slug {
			out, replaced = append(out, mine), true
			continue
		}
		out = append(out, t)
	}
	if !replaced {
		out = append(out, mine)
	}
	b, err := json.MarshalIndent(map[string]any{"tenants": out}, "", "  ")
	if err != nil {
		return nil, err
	}
	if _, err := tenant.ParseDirectory(b); err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func requireLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("-api-url %q is not a URL", raw)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("-dry-run only uploads to a loopback -api-url, not %q", raw)
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
