package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"
)

// config is the example server's configuration: flags, with environment
// variables as defaults (DESIGN section 11).
type config struct {
	addr              string
	tenantsFile       string
	tenantsJSON       string
	workersFile       string
	store             string
	kv                string
	facilitatorURL    string
	facilitatorAPIKey string
	payTo             string
	network           string
	adminToken        string
	trustedProxies    []netip.Prefix
	drainTimeoutSecs  int
	draftHeaders      bool
	readTimeout       time.Duration
	writeTimeout      time.Duration
	maxBodyBytes      int64
	publicURL         string
	metricsToken      string
	claimInterval     time.Duration
}

// defaultPayTo receives the demo's test payments. It is a public test
// address; nothing is ever really paid to it by the local facilitator.
const defaultPayTo = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	env := func(names ...string) string {
		for _, n := range names {
			if v := getenv(n); v != "" {
				return v
			}
		}
		return ""
	}
	or := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	var c config
	var trusted string
	fs := flag.NewFlagSet("httpserver", flag.ContinueOnError)
	// Errors come back as one line; -help prints the flags.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&c.addr, "addr", or(env("ADDR"), "127.0.0.1:8402"), "listen address (env ADDR)")
	fs.StringVar(&c.tenantsFile, "tenants", "", "tenant directory JSON file, either form (env TENANT_DIRECTORY_JSON holds the JSON itself); default: the built-in demo directory")
	fs.StringVar(&c.workersFile, "workers", "", "JSON object workerName -> base URL for the HTTP upstream fetcher; names not listed use the built-in demo workers")
	fs.StringVar(&c.store, "store", or(env("STORE_URL"), "sqlite:./data/dispatcher.db"), "ledger, audit, events and tenants store: memory, sqlite:PATH or postgres://... (env STORE_URL)")
	fs.StringVar(&c.kv, "kv", env("KV_URL"), "counter store: memory, sqlite:PATH, redis://... or postgres://... (env KV_URL); default: same as -store")
	fs.StringVar(&c.facilitatorURL, "facilitator-url", env("FACILITATOR_URL", "X402_FACILITATOR_URL"), "remote x402 facilitator base URL (env FACILITATOR_URL, X402_FACILITATOR_URL); default: the built-in local facilitator")
	fs.StringVar(&c.facilitatorAPIKey, "facilitator-api-key", env("FACILITATOR_API_KEY"), "bearer API key for the facilitator (env FACILITATOR_API_KEY)")
	fs.StringVar(&c.payTo, "pay-to", or(env("PAY_TO_ADDRESS"), defaultPayTo), "platform payTo address (env PAY_TO_ADDRESS)")
	fs.StringVar(&c.network, "network", or(env("X402_NETWORK"), "eip155:84532"), "payment network: eip155:84532 (Base Sepolia) or eip155:8453 (Base) (env X402_NETWORK)")
	fs.StringVar(&c.adminToken, "admin-token", env("PLATFORM_ADMIN_TOKEN"), "bearer token for /__platform/events (env PLATFORM_ADMIN_TOKEN); generated and printed when unset")
	fs.StringVar(&trusted, "trusted-proxies", env("TRUSTED_PROXIES"), "comma-separated CIDRs whose X-Forwarded-For is believed (env TRUSTED_PROXIES)")
	fs.IntVar(&c.drainTimeoutSecs, "drain-timeout", 15, "seconds in-flight requests get to finish on shutdown")
	fs.DurationVar(&c.readTimeout, "read-timeout", durationEnv(getenv("READ_TIMEOUT"), 30*time.Second), "longest time to read a request, body included (env READ_TIMEOUT)")
	fs.DurationVar(&c.writeTimeout, "write-timeout", durationEnv(getenv("WRITE_TIMEOUT"), 2*time.Minute), "longest time from the end of the request headers to the end of the answer (env WRITE_TIMEOUT)")
	fs.StringVar(&c.metricsToken, "metrics-token", env("METRICS_TOKEN"), "bearer token GET /metrics requires (env METRICS_TOKEN); empty: /metrics is open")
	fs.StringVar(&c.publicURL, "public-url", env("PUBLIC_URL"), "the gateway's public origin, for discovery and the marketplace's example commands (env PUBLIC_URL); default: http://<addr>")
	fs.Int64Var(&c.maxBodyBytes, "max-body-bytes", 10<<20, "largest tenant request body; larger ones are answered 413 request_too_large")
	fs.DurationVar(&c.claimInterval, "claim-interval", 5*time.Minute, "how long a payment-channel charge may stay unclaimed; the claimer checks every half of it (at most every 30 s)")
	fs.BoolVar(&c.draftHeaders, "ratelimit-draft-headers", env("RATELIMIT_DRAFT_HEADERS") == "true", "also send the IETF draft RateLimit-Policy and RateLimit headers (env RATELIMIT_DRAFT_HEADERS=true)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "usage: httpserver [flags]\n       httpserver verify -store URL")
			fs.SetOutput(stderr)
			fs.PrintDefaults()
		}
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.tenantsFile == "" {
		c.tenantsJSON = getenv("TENANT_DIRECTORY_JSON")
	}
	if c.kv == "" {
		c.kv = c.store
	}
	if c.publicURL == "" {
		c.publicURL = "http://" + c.addr
	}
	c.publicURL = strings.TrimSuffix(c.publicURL, "/")
	for _, s := range strings.Split(trusted, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return c, fmt.Errorf("-trusted-proxies: %q is not a CIDR or an address", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		c.trustedProxies = append(c.trustedProxies, p)
	}
	if !isAddress(c.payTo) {
		return c, fmt.Errorf("-pay-to: %q is not a 0x-prefixed 20-byte hex address", c.payTo)
	}
	switch c.network {
	case "eip155:84532", "base-sepolia", "eip155:8453", "base":
	default:
		return c, fmt.Errorf("-network: %q is not eip155:84532 or eip155:8453", c.network)
	}
	if c.drainTimeoutSecs <= 0 {
		return c, errors.New("-drain-timeout must be positive")
	}
	if c.readTimeout <= 0 || c.writeTimeout <= 0 {
		return c, errors.New("-read-timeout and -write-timeout must be positive")
	}
	if c.maxBodyBytes <= 0 {
		return c, errors.New("-max-body-bytes must be positive")
	}
	return c, nil
}

// durationEnv parses an environment value as a duration ("30s"), or
// returns def when it is empty or unreadable.
func durationEnv(v string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return d
	}
	return def
}

func readFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return b, nil
}

func isAddress(s string) bool {
	if len(s) != 42 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X') {
		return false
	}
	for _, c := range s[2:] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
