package postgres_test

import (
	"testing"

	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/quota/quotatest"
)

func TestQuotaConformance(t *testing.T) {
	t.Parallel()
	quotatest.Run(t, func(t *testing.T) kv.Store {
		return newFastStore(t)
	})
}
