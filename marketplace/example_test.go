package marketplace_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"regexp"
	"time"

	"github.com/shopspring/decimal"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/marketplace"
	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
)

func ExampleNew() {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	dir, _ := tenant.ParseDirectory([]byte(`{"tenants": [
	  {"slug": "weather", "workerName": "w", "x402Enabled": true, "priceUsd": "0.002", "directory": "data"},
	  {"slug": "cities", "workerName": "w", "x402Enabled": true, "priceUsd": "0.001", "directory": "data"}]}`))
	events, _ := memory.NewEvents(memory.EventsConfig{})
	for i, api := range []string{"weather", "weather", "cities"} {
		_ = events.Append(context.Background(), metrics.UsageEvent{
			Time: now.Add(-time.Hour), RequestID: fmt.Sprint("r", i), APIID: api,
			CallerID: metrics.HashCaller(fmt.Sprint("agent-", i)), Status: 200, Lifecycle: metrics.LifecycleServed,
		})
	}
	h, err := marketplace.New(marketplace.Config{
		Registry: tenant.NewRegistry(dir), Events: events, Now: func() time.Time { return now },
	})
	if err != nil {
		panic(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/?window=today", nil))
	fmt.Println(rec.Code, rec.Header().Get("Content-Type"))
	for _, m := range regexp.MustCompile(`<tr data-api="([^"]+)"><td class="num">(\d+)</td>`).FindAllStringSubmatch(rec.Body.String(), -1) {
		fmt.Println(m[2], m[1])
	}
	// Output:
	// 200 text/html; charset=utf-8
	// 1 weather
	// 2 cities
}

func ExamplePaywall() {
	req, _ := x402.NewRequirement(x402.RequirementParams{
		Price: mustDecimal("0.01"), PayTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
		Resource: "http://127.0.0.1:8402/t/demo-paid/premium/rows",
	})
	pr := x402.PaymentRequired{X402Version: 2, Resource: req.Resource, Accepts: []x402.PaymentRequirements{req.V2()}}

	browser := httptest.NewRequest("GET", "/t/demo-paid/premium/rows", nil)
	browser.Header.Set("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	if marketplace.WantsHTML(browser) {
		page := string(marketplace.Paywall(pr))
		fmt.Println(regexp.MustCompile(`<span class="price">[^<]+</span>`).FindString(page))
		fmt.Println(regexp.MustCompile(`Base Sepolia \(testnet\)`).MatchString(page))
	}
	// Output:
	// <span class="price">$0.01</span>
	// true
}

func mustDecimal(s string) decimal.Decimal { return decimal.RequireFromString(s) }
