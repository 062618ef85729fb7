package postgres_test

import (
	"testing"

	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/x402/channel/channeltest"
)

// TestChannelConformance runs the batch-settlement channel state suite
// over the PostgreSQL KV.
func TestChannelConformance(t *testing.T) {
	channeltest.Run(t, func(t *testing.T) kv.Store {
		s, _, _ := newStore(t)
		return s
	})
}
