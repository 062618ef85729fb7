package ops_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/402claw/dispatcher/ops"
)

// BenchmarkAdminPutTenant replaces one tenant of a 100-tenant directory:
// read, validate the whole directory, save, swap and audit.
func BenchmarkAdminPutTenant(b *testing.B) {
	f := newFixture(&testing.T{}, &txTenants{})
	for i := 0; i < 100; i++ {
		req := httptest.NewRequest("PUT", fmt.Sprintf("/__platform/tenants/t%d", i), strings.NewReader(`{"workerName":"w"}`))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		f.h.ServeHTTP(httptest.NewRecorder(), req)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		req := httptest.NewRequest("PUT", "/__platform/tenants/t7", strings.NewReader(fmt.Sprintf(`{"workerName":"w%d"}`, i)))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		rec := httptest.NewRecorder()
		f.h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code, rec.Body.String())
		}
	}
}

// BenchmarkAuthenticateKey is the per-request cost of an owner's key on
// the memory store (hash and look up; no cache).
func BenchmarkAuthenticateKey(b *testing.B) {
	f := newFixture(&testing.T{}, nil)
	acc, _ := ops.NewAccounts(f.users, ops.AccountsConfig{})
	ctx := context.Background()
	_, _ = acc.CreateUser(ctx, "u", "")
	_, secret, _ := acc.IssueKey(ctx, "u", "")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := acc.Authenticate(ctx, secret); err != nil {
			b.Fatal(err)
		}
	}
}
