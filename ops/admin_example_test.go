package ops_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/ops"
	"github.com/402claw/dispatcher/tenant"
)

// An owner publishes a tenant with their API key; the admin API swaps it
// into the registry, sets its owner from the key and audits the change.
func ExampleAdminHandler() {
	ctx := context.Background()
	registry := tenant.NewRegistry(nil)
	led, _ := ledger.New(memory.NewLedger(), ledger.Config{})
	accounts, _ := ops.NewAccounts(memory.NewUsers(), ops.AccountsConfig{})
	admin, _ := ops.NewAdminHandler(ops.AdminConfig{
		AdminToken: "admin-secret", Registry: registry, Store: memory.NewTenants(),
		Ledger: led, Accounts: accounts,
	})

	_, _ = accounts.CreateUser(ctx, "alice", "Alice")
	_, key, _ := accounts.IssueKey(ctx, "alice", "laptop")

	req := httptest.NewRequest("PUT", "/__platform/tenants/weather",
		strings.NewReader(`{"workerName":"w-weather","priceUsd":"0.002","x402Enabled":true,"ownerUserId":"mallory"}`))
	req.Header.Set("Authorization", "Bearer "+key)
	rec := httptest.NewRecorder()
	admin.ServeHTTP(rec, req)
	fmt.Println(rec.Code)

	t, _ := registry.Load().Lookup("weather")
	fmt.Println(t.Slug, t.OwnerUserID, t.PriceUSD, t.Charges())
	recs, _ := led.AuditLog(ctx, ledger.ListAuditParams{})
	fmt.Println(recs[0].Kind, recs[0].Tenant)
	// Output:
	// 201
	// weather alice 0.002 true
	// directory_swap weather
}
