package channel_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/channel/channeltest"
)

// headless fails every raise of a channel's head counter, as a gateway
// that crashes between writing a state version and raising the head does.
type headless struct {
	kv.Store
	failing bool
}

func (h *headless) Incr(ctx context.Context, key string, in kv.Increment) (int64, bool, error) {
	if h.failing && strings.HasSuffix(key, ":head") {
		return 0, false, errors.New("crashed before raising the head")
	}
	return h.Store.Incr(ctx, key, in)
}

// State versions stay readable when the head counter lags behind them,
// and the head heals with the next write.
func TestStateWithLaggingHead(t *testing.T) {
	ctx := context.Background()
	s := &headless{Store: memory.NewKV()}
	e := channeltest.NewEnv(t, s, channel.Config{})
	s.failing = true
	charged := e.State(t).Charged
	for i := 0; i < 6; i++ {
		h, err := e.Service.Begin(ctx, e.Voucher(t, charged+e.Amount), e.Req)
		require.NoError(t, err)
		_, err = h.Commit(ctx, "100")
		require.NoError(t, err)
		charged += 100
		require.Equal(t, charged, e.State(t).Charged)
	}
	s.failing = false
	for i := 0; i < 4; i++ {
		h, err := e.Service.Begin(ctx, e.Voucher(t, charged+e.Amount), e.Req)
		require.NoError(t, err)
		_, err = h.Commit(ctx, "100")
		require.NoError(t, err)
		charged += 100
		require.Equal(t, charged, e.State(t).Charged)
	}
}
