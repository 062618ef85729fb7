package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/ledger"
)

// tenantLimits is what the checker knows of a tenant's configuration.
type tenantLimits struct {
	Paid                           bool
	Price                          decimal.Decimal
	DailyRequests, MonthlyRequests int
	DailySpend, MonthlySpend       decimal.Decimal // zero: no cap
	// ExactQuota marks a free tenant whose worker never fails: every
	// request the quota admits is served, so once the quota refuses, the
	// served count must equal the quota exactly (never N-1).
	ExactQuota bool
}

// killWindow is the time from a SIGKILL of the gateway to the moment its
// successor answered its health check.
type killWindow struct{ Killed, Healthy time.Time }

// chainResult is the outcome of one audit-chain verification.
type chainResult struct {
	Ran     bool
	Records int64
	Err     error
	How     string // "ledger.Verify" or "httpserver verify"
}

// checkInput is everything the invariants are checked against.
type checkInput struct {
	Tenants map[string]tenantLimits
	// Ledger holds the run's ledger entries; LedgerRead says whether the
	// store could be read at all (not for -store memory).
	Ledger     []ledger.Entry
	LedgerRead bool
	// AuditRecords is the number of audit records (-1: unknown).
	AuditRecords int64
	Settles      []settleRecord
	Obs          []observation
	Kills        []killWindow
	Chains       []chainResult
	// StrictCrash makes a settlement that a SIGKILL cut off before the
	// ledger write a breach rather than a warning.
	StrictCrash bool
}

// checkResult is the verdict of one invariant.
type checkResult struct {
	Name     string
	OK       bool
	Skipped  string // why the check did not run
	Detail   string
	Breaches []string
	Warnings []string
}

func (c *checkResult) breach(format string, args ...any) {
	c.Breaches = append(c.Breaches, fmt.Sprintf(format, args...))
}

func (c *checkResult) warn(format string, args ...any) {
	c.Warnings = append(c.Warnings, fmt.Sprintf(format, args...))
}

func dayOf(t time.Time) string   { return t.UTC().Format("2006-01-02") }
func monthOf(t time.Time) string { return t.UTC().Format("2006-01") }

// checkInvariants checks the money invariants of a run.
func checkInvariants(in checkInput) []checkResult {
	var out []checkResult
	add := func(c checkResult) {
		if c.Skipped == "" {
			c.OK = len(c.Breaches) == 0
		}
		out = append(out, c)
	}
	ours := func(tenant string) bool { _, ok := in.Tenants[tenant]; return ok }
	var entries []ledger.Entry
	for _, e := range in.Ledger {
		if ours(e.Tenant) {
			entries = append(entries, e)
		}
	}

	// Transport errors of requests that overlapped a SIGKILL, by the
	// authorization they carried: those requests may have been cut off
	// between the settlement and the ledger write.
	cutOff := map[string]bool{}
	for _, o := range in.Obs {
		if o.Outcome == outConnError && o.AuthKey != "" && overlapsKill(o, in.Kills) {
			cutOff[o.AuthKey] = true
		}
	}

	// 1. Every settled ledger entry matches exactly one successful
	// settlement at the facilitator, field for field.
	byTx := map[string][]settleRecord{}
	for _, s := range in.Settles {
		byTx[strings.ToLower(s.TxHash)] = append(byTx[strings.ToLower(s.TxHash)], s)
	}
	c := checkResult{Name: "ledger settled entries <-> facilitator settlements (by txHash)"}
	if !in.LedgerRead {
		c.Skipped = "the ledger cannot be read from this store"
	} else {
		n := 0
		for _, e := range entries {
			if e.Status != ledger.StatusSettled {
				continue
			}
			n++
			ms := byTx[strings.ToLower(e.TxHash)]
			if e.TxHash == "" || len(ms) != 1 {
				c.breach("ledger entry %s (tenant %s, key %s, tx %q) matches %d facilitator settlements, want 1", e.ID, e.Tenant, e.IdempotencyKey, e.TxHash, len(ms))
				continue
			}
			s := ms[0]
			if !strings.EqualFold(e.Payer, s.Payer) || e.AmountAtomic != s.Amount || !strings.EqualFold(e.PayTo, s.PayTo) || e.IdempotencyKey != s.Key || (s.Tenant != "" && s.Tenant != e.Tenant) {
				c.breach("ledger entry %s differs from its settlement: ledger payer=%s amount=%s payTo=%s key=%s tenant=%s; facilitator payer=%s amount=%s payTo=%s key=%s tenant=%s",
					e.ID, e.Payer, e.AmountAtomic, e.PayTo, e.IdempotencyKey, e.Tenant, s.Payer, s.Amount, s.PayTo, s.Key, s.Tenant)
			}
		}
		c.Detail = fmt.Sprintf("%d settled entries checked", n)
	}
	add(c)

	// 2. The reverse: every successful settlement is in the ledger, as
	// settled (same txHash) or pending (same key: the gateway got no
	// answer and recorded the ambiguity).
	c = checkResult{Name: "facilitator settlements <-> ledger entries (settled by txHash, pending by key)"}
	if !in.LedgerRead {
		c.Skipped = "the ledger cannot be read from this store"
	} else {
		settledTx := map[string]int{}
		pendingKey := map[string]int{}
		for _, e := range entries {
			switch e.Status {
			case ledger.StatusSettled:
				settledTx[strings.ToLower(e.TxHash)]++
			case ledger.StatusPending:
				pendingKey[e.Tenant+"\x00"+e.IdempotencyKey]++
			}
		}
		asPending, crash := 0, 0
		for _, s := range in.Settles {
			m := settledTx[strings.ToLower(s.TxHash)] + pendingKey[s.Tenant+"\x00"+s.Key]
			switch {
			case m == 1:
				if settledTx[strings.ToLower(s.TxHash)] == 0 {
					asPending++
				}
			case m == 0 && cutOff[s.Key] && !in.StrictCrash:
				crash++
				c.warn("settlement %s (tenant %s, payer %s) has no ledger entry: its request was cut off by a SIGKILL (settled but not recorded)", s.TxHash, s.Tenant, s.Payer)
			default:
				c.breach("facilitator settlement %s (tenant %s, key %s, at %s) matches %d ledger entries, want 1", s.TxHash, s.Tenant, s.Key, s.Time.Format(time.RFC3339Nano), m)
			}
		}
		c.Detail = fmt.Sprintf("%d settlements checked (%d recorded as pending, %d lost to SIGKILL)", len(in.Settles), asPending, crash)
	}
	add(c)

	// 3. No idempotency key, and no authorization, is settled twice.
	c = checkResult{Name: "no idempotency key or authorization settled twice"}
	{
		keys := map[string]int{}
		txs := map[string]int{}
		for _, e := range entries {
			if e.Status == ledger.StatusSettled || e.Status == ledger.StatusPending {
				keys[e.Tenant+"\x00"+e.IdempotencyKey]++
			}
			if e.Status == ledger.StatusSettled {
				txs[strings.ToLower(e.TxHash)]++
			}
		}
		for k, n := range keys {
			if n > 1 {
				c.breach("tenant/key %q has %d settled or pending entries", strings.ReplaceAll(k, "\x00", " "), n)
			}
		}
		for tx, n := range txs {
			if n > 1 {
				c.breach("transaction %s is in %d settled entries", tx, n)
			}
		}
		fkeys := map[string]int{}
		for _, s := range in.Settles {
			fkeys[s.Key]++
		}
		for k, n := range fkeys {
			if n > 1 {
				c.breach("authorization %s was settled %d times by the facilitator", k, n)
			}
		}
		// One authorization buys one response: a second 2xx for it must
		// be a replay.
		fresh := map[string]int{}
		for _, o := range in.Obs {
			if o.AuthKey != "" && o.served() {
				fresh[o.AuthKey]++
			}
		}
		for k, n := range fresh {
			if n > 1 {
				c.breach("authorization %s got %d non-replayed 2xx answers", k, n)
			}
		}
		c.Detail = fmt.Sprintf("%d ledger keys, %d facilitator settlements, %d paid 2xx answers", len(keys), len(in.Settles), len(fresh))
	}
	add(c)

	// 4. Every paid 2xx answer the harness got is in the ledger, settled,
	// under the same tenant and transaction.
	c = checkResult{Name: "every paid 2xx answer is a settled ledger entry"}
	if !in.LedgerRead {
		c.Skipped = "the ledger cannot be read from this store"
	} else {
		settled := map[string]string{}
		for _, e := range entries {
			if e.Status == ledger.StatusSettled {
				settled[strings.ToLower(e.TxHash)] = e.Tenant
			}
		}
		n := 0
		for _, o := range in.Obs {
			if o.Outcome == outPaidNoReceipt {
				c.breach("paid request to %s at %s answered 2xx without a settle response", o.Tenant, o.Start.Format(time.RFC3339Nano))
			}
			if o.Outcome != outPaid {
				continue
			}
			n++
			if tenant, ok := settled[strings.ToLower(o.TxHash)]; !ok || tenant != o.Tenant {
				c.breach("paid answer from %s with transaction %s has no settled ledger entry for that tenant", o.Tenant, o.TxHash)
			}
		}
		c.Detail = fmt.Sprintf("%d paid answers checked", n)
	}
	add(c)

	// 5. Spend caps: settled (and pending, which commits its hold) amounts
	// per tenant and UTC day/month never exceed the cap.
	c = checkResult{Name: "spend per tenant per UTC day/month <= cap (ledger: settled+pending)"}
	if !in.LedgerRead {
		c.Skipped = "the ledger cannot be read from this store"
	} else {
		day := map[[2]string]decimal.Decimal{}
		month := map[[2]string]decimal.Decimal{}
		for _, e := range entries {
			if e.Status != ledger.StatusSettled && e.Status != ledger.StatusPending {
				continue
			}
			a, err := decimal.NewFromString(e.Amount)
			if err != nil {
				c.breach("entry %s has amount %q: %v", e.ID, e.Amount, err)
				continue
			}
			day[[2]string{e.Tenant, dayOf(e.Time)}] = day[[2]string{e.Tenant, dayOf(e.Time)}].Add(a)
			month[[2]string{e.Tenant, monthOf(e.Time)}] = month[[2]string{e.Tenant, monthOf(e.Time)}].Add(a)
		}
		capped, atCap := 0, 0
		for k, sum := range day {
			if lim := in.Tenants[k[0]].DailySpend; lim.IsPositive() {
				capped++
				if sum.GreaterThan(lim) {
					c.breach("tenant %s spent %s on %s, daily cap %s", k[0], sum, k[1], lim)
				} else if sum.Add(in.Tenants[k[0]].Price).GreaterThan(lim) {
					atCap++
				}
			}
		}
		for k, sum := range month {
			if lim := in.Tenants[k[0]].MonthlySpend; lim.IsPositive() {
				capped++
				if sum.GreaterThan(lim) {
					c.breach("tenant %s spent %s in %s, monthly cap %s", k[0], sum, k[1], lim)
				} else if sum.Add(in.Tenants[k[0]].Price).GreaterThan(lim) {
					atCap++
				}
			}
		}
		c.Detail = fmt.Sprintf("%d capped tenant-windows, %d of them filled to the cap", capped, atCap)
	}
	add(c)

	// 6. Usage quotas, from the harness's own observations: 2xx answers
	// (replays excluded) per tenant and UTC day/month <= quota.
	c = checkResult{Name: "served 2xx per tenant per UTC day/month <= quota (harness observations)"}
	{
		day := map[[2]string]int{}
		month := map[[2]string]int{}
		for _, o := range in.Obs {
			if !o.served() || !ours(o.Tenant) {
				continue
			}
			// A request that straddles midnight may count on either
			// side: it is left out rather than guessed.
			if dayOf(o.Start) == dayOf(o.End) {
				day[[2]string{o.Tenant, dayOf(o.Start)}]++
			}
			if monthOf(o.Start) == monthOf(o.End) {
				month[[2]string{o.Tenant, monthOf(o.Start)}]++
			}
		}
		checkQuota(&c, in.Tenants, day, month, "served")
	}
	add(c)

	// 6b. Quotas are exact, not just never exceeded: for a tenant whose
	// every admitted request is served, a refusal means the quota is used
	// up exactly. Kills, transport errors and unknown answers void it.
	c = checkResult{Name: "quota refusals come exactly at the quota (free tenants, healthy worker)"}
	if len(in.Kills) > 0 {
		c.Skipped = "the gateway was killed: killed requests consume quota without being served"
	} else {
		type window struct{ tenant, day string }
		served := map[window]int{}
		refused := map[window]bool{}
		void := map[window]bool{}
		for _, o := range in.Obs {
			l, ok := in.Tenants[o.Tenant]
			if !ok || !l.ExactQuota || l.DailyRequests == 0 || l.MonthlyRequests != 0 {
				continue
			}
			w := window{o.Tenant, dayOf(o.Start)}
			switch {
			case dayOf(o.Start) != dayOf(o.End):
				void[w] = true
			case o.served():
				served[w]++
			case o.Outcome == "429 usage_quota_exceeded":
				refused[w] = true
			case o.Outcome == "429 rate_limited":
			default:
				void[w] = true
			}
		}
		n := 0
		for w := range refused {
			if void[w] {
				continue
			}
			n++
			if lim := in.Tenants[w.tenant].DailyRequests; served[w] != lim {
				c.breach("tenant %s on %s: quota refused after %d served, daily quota %d", w.tenant, w.day, served[w], lim)
			}
		}
		c.Detail = fmt.Sprintf("%d exhausted quota windows checked", n)
	}
	add(c)

	// 7. Usage quotas, from the ledger, for paid tenants: every settled or
	// pending entry consumed one unit of quota.
	c = checkResult{Name: "settled+pending entries per paid tenant per UTC day/month <= quota (ledger)"}
	if !in.LedgerRead {
		c.Skipped = "the ledger cannot be read from this store"
	} else {
		day := map[[2]string]int{}
		month := map[[2]string]int{}
		for _, e := range entries {
			if e.Status == ledger.StatusSettled || e.Status == ledger.StatusPending {
				day[[2]string{e.Tenant, dayOf(e.Time)}]++
				month[[2]string{e.Tenant, monthOf(e.Time)}]++
			}
		}
		checkQuota(&c, in.Tenants, day, month, "ledger entries")
	}
	add(c)

	// 8. Spend caps from the harness's side: what it was charged (paid
	// answers) per tenant and UTC day never exceeds the cap.
	c = checkResult{Name: "charged per tenant per UTC day <= cap (harness observations)"}
	{
		spent := map[[2]string]decimal.Decimal{}
		for _, o := range in.Obs {
			if o.Outcome == outPaid && ours(o.Tenant) && dayOf(o.Start) == dayOf(o.End) {
				k := [2]string{o.Tenant, dayOf(o.Start)}
				spent[k] = spent[k].Add(in.Tenants[o.Tenant].Price)
			}
		}
		for k, sum := range spent {
			if lim := in.Tenants[k[0]].DailySpend; lim.IsPositive() && sum.GreaterThan(lim) {
				c.breach("tenant %s charged the harness %s on %s, daily cap %s", k[0], sum, k[1], lim)
			}
		}
		c.Detail = fmt.Sprintf("%d tenant-days", len(spent))
	}
	add(c)

	// 9. Free tenants never take money.
	c = checkResult{Name: "free tenants are never charged"}
	for _, e := range entries {
		if !in.Tenants[e.Tenant].Paid {
			c.breach("free tenant %s has ledger entry %s", e.Tenant, e.ID)
		}
	}
	for _, s := range in.Settles {
		if l, ok := in.Tenants[s.Tenant]; ok && !l.Paid {
			c.breach("free tenant %s was settled: %s", s.Tenant, s.TxHash)
		}
	}
	add(c)

	// 10. The audit chain verifies, and it holds a record per entry.
	c = checkResult{Name: "audit chain verifies"}
	if len(in.Chains) == 0 {
		c.Skipped = "no verification ran (memory store)"
	}
	var details []string
	for _, ch := range in.Chains {
		if !ch.Ran {
			continue
		}
		if ch.Err != nil {
			c.breach("%s: %v", ch.How, ch.Err)
		}
		details = append(details, fmt.Sprintf("%s: %d records", ch.How, ch.Records))
	}
	if in.AuditRecords >= 0 && in.LedgerRead && in.AuditRecords < int64(len(in.Ledger)) {
		c.breach("%d audit records for %d ledger entries: some settlement has no audit record", in.AuditRecords, len(in.Ledger))
	}
	c.Detail = strings.Join(details, "; ")
	add(c)
	return out
}

func checkQuota(c *checkResult, tenants map[string]tenantLimits, day, month map[[2]string]int, what string) {
	quotaed, atQuota := 0, 0
	for k, n := range day {
		if lim := tenants[k[0]].DailyRequests; lim > 0 {
			quotaed++
			if n > lim {
				c.breach("tenant %s: %d %s on %s, daily quota %d", k[0], n, what, k[1], lim)
			} else if n == lim {
				atQuota++
			}
		}
	}
	for k, n := range month {
		if lim := tenants[k[0]].MonthlyRequests; lim > 0 {
			quotaed++
			if n > lim {
				c.breach("tenant %s: %d %s in %s, monthly quota %d", k[0], n, what, k[1], lim)
			} else if n == lim {
				atQuota++
			}
		}
	}
	c.Detail = fmt.Sprintf("%d quota windows, %d of them used up exactly", quotaed, atQuota)
}

func overlapsKill(o observation, kills []killWindow) bool {
	for _, k := range kills {
		if !o.Start.After(k.Healthy) && !o.End.Before(k.Killed) {
			return true
		}
	}
	return false
}

// printChecks writes each check's verdict and returns whether all passed.
func printChecks(w io.Writer, cs []checkResult) bool {
	ok := true
	fmt.Fprintln(w, "\nmoney invariants:")
	for _, c := range cs {
		verdict := "PASS"
		switch {
		case c.Skipped != "":
			verdict = "SKIP"
		case !c.OK:
			verdict, ok = "FAIL", false
		}
		fmt.Fprintf(w, "  [%s] %s", verdict, c.Name)
		if c.Skipped != "" {
			fmt.Fprintf(w, ": %s", c.Skipped)
		} else if c.Detail != "" {
			fmt.Fprintf(w, ": %s", c.Detail)
		}
		fmt.Fprintln(w)
		show := func(label string, xs []string) {
			sort.Strings(xs)
			for i, x := range xs {
				if i == 20 {
					fmt.Fprintf(w, "        ... and %d more\n", len(xs)-20)
					break
				}
				fmt.Fprintf(w, "        %s %s\n", label, x)
			}
		}
		show("BREACH:", c.Breaches)
		show("warning:", c.Warnings)
	}
	return ok
}
