//go:build !race

package memory_test

import "testing"

// TestEventsCallerMemoryBounded300k is the finding's own figure: 300,000
// distinct callers in one hour of one API.
func TestEventsCallerMemoryBounded300k(t *testing.T) {
	t.Parallel()
	callerMemoryBounded(t, 300_000)
}
