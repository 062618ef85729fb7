package memory_test

import (
	"testing"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/x402/channel/channeltest"
)

// TestChannelConformance runs the batch-settlement channel state suite
// over the memory KV.
func TestChannelConformance(t *testing.T) {
	channeltest.Run(t, func(t *testing.T) kv.Store { return memory.NewKV() })
}
