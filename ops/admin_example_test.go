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

// The admin assigns a tenant (and its worker) to an owner; the owner then
// prices it with their API key. The admin API swaps each change into the
// registry, keeps the owner from the key and audits the change.
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

	put := func(token, body string) int {
		req := httptest.NewRequest("PUT", "/__platform/tenants/weather", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		admin.ServeHTTP(rec, req)
		return rec.Code
	}
	fmt.Println(put("admin-secret", `{"workerName":"w-weather","ownerUserId":"alice"}`))
	fmt.Println(put(key, `{"workerName":"w-weather","priceUsd":"0.002","x402Enabled":true,"ownerUserId":"mallory"}`))

	t, _ := registry.Load().Lookup("weather")
	fmt.Println(t.Slug, t.OwnerUserID, t.PriceUSD, t.Charges())
	recs, _ := led.AuditLog(ctx, ledger.ListAuditParams{})
	fmt.Println(recs[0].Kind, recs[0].Tenant)
	// Output:
	// 201
	// 200
	// weather alice 0.002 true
	// directory_swap weather
}
