package dispatch_test

import (
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// Request ids are UUIDv7: time-ordered, so the usage events a store keys by
// request id insert at the end of its index instead of at a random page
// (which costs the SQLite default most of an event's write), and successive
// requests get increasing ids.
func TestRequestIDsAreTimeOrdered(t *testing.T) {
	t.Parallel()
	d, _ := newDispatcher(t, nil)
	var prev string
	for range 50 {
		rec := do(t, d, "GET", "http://gw.local/t/acme/rows", nil)
		require.Equal(t, 200, rec.Code)
		rid := rec.Header().Get("X-Request-Id")
		id, err := uuid.Parse(rid)
		require.NoError(t, err)
		require.Equal(t, uuid.Version(7), id.Version(), rid)
		require.Greater(t, rid, prev, "ids increase from request to request")
		prev = rid
	}
}
