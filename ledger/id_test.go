package ledger_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/ledger"
)

// Entry ids are time-ordered (version 7) by default, so an id index takes
// its inserts at one end.
func TestDefaultIDsAreTimeOrdered(t *testing.T) {
	l, err := ledger.New(memory.NewLedger(), ledger.Config{})
	require.NoError(t, err)
	prev := ""
	for i := range 50 {
		e, _, err := l.RecordSettlement(context.Background(), ledger.Entry{
			Tenant: "acme", IdempotencyKey: fmt.Sprint("k", i), Amount: "1", AmountAtomic: "1", Status: ledger.StatusSettled,
		})
		require.NoError(t, err)
		require.EqualValues(t, 7, e.ID.Version())
		require.Greater(t, e.ID.String(), prev)
		prev = e.ID.String()
	}
}
