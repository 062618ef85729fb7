package channel_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/channel/channeltest"
)

// answerLosingKV applies the next channel state write and then reports a
// timeout, as a store whose answer was lost does.
type answerLosingKV struct {
	*memory.KV
	armed atomic.Bool
}

func (k *answerLosingKV) SetNX(ctx context.Context, key string, v []byte, ttl time.Duration) (bool, error) {
	ok, err := k.KV.SetNX(ctx, key, v, ttl)
	if strings.Contains(key, ":v:") && k.armed.CompareAndSwap(true, false) {
		return false, context.DeadlineExceeded
	}
	return ok, err
}

// A charge whose state write was applied but answered with an error is
// not lost to the journal: the hold keeps the channel's lease, so the next
// request waits for it to lapse and then records the charge again; the
// charge entries still sum to chargedCumulativeAmount.
func TestChargeWithLostWriteAnswerIsJournaled(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	charges := map[string]uint64{}
	j := channel.JournalFunc(func(_ context.Context, e channel.Entry) error {
		if e.Status == channel.StatusCharged {
			mu.Lock()
			charges[e.Key] = e.Amount
			mu.Unlock()
		}
		return nil
	})
	store := &answerLosingKV{KV: memory.NewKV()}
	const lease = 200 * time.Millisecond
	e := channeltest.NewEnv(t, store, channel.Config{Journal: j, LeaseTTL: lease})
	h, err := e.Service.Begin(ctx, e.Voucher(t, 2000), e.Req)
	require.NoError(t, err)
	store.armed.Store(true)
	_, err = h.Commit(ctx, "1000")
	require.Error(t, err)
	require.EqualValues(t, 2000, e.State(t).Charged, "the write was applied")

	_, err = e.Service.Begin(ctx, e.Voucher(t, 3000), e.Req)
	require.ErrorIs(t, err, channel.ErrBusy, "the lease is kept until it lapses")
	time.Sleep(lease + 50*time.Millisecond)
	h, err = e.Service.Begin(ctx, e.Voucher(t, 3000), e.Req)
	require.NoError(t, err)
	_, err = h.Commit(ctx, "1000")
	require.NoError(t, err)

	var sum uint64
	for _, a := range charges {
		sum += a
	}
	require.Equal(t, e.State(t).Charged, sum, "Σ charge entries = chargedCumulativeAmount: %v", charges)
	require.Len(t, charges, 3)
}
