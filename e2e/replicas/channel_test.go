package replicas_test

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/adapters/redis"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/quota"
	"github.com/402claw/dispatcher/tenant"
	"github.com/402claw/dispatcher/x402"
	"github.com/402claw/dispatcher/x402/channel"
	"github.com/402claw/dispatcher/x402/exact"
	"github.com/402claw/dispatcher/x402/localfacilitator"
	"github.com/402claw/dispatcher/x402/payment"
)

// One payment channel, two gateway replicas over one Redis: 100 concurrent
// requests carrying the same next voucher, spread over both, are served
// exactly once; every other one is refused (busy, or a corrective 402 once
// the voucher was spent) and the worker runs once.
func TestChannelVoucherServedOnceAcrossReplicas(t *testing.T) {
	redisURL := serviceURL(t, "TEST_REDIS_URL")
	opts, err := goredis.ParseURL(redisURL)
	require.NoError(t, err)
	prefix := "chrep:" + uuid.NewString() + ":"
	lf, err := localfacilitator.New(localfacilitator.Config{})
	require.NoError(t, err)
	sup, err := lf.Supported(context.Background())
	require.NoError(t, err)
	auth, ok := channel.ReceiverAuthorizer(sup, "eip155:84532")
	require.True(t, ok)
	sc, err := channel.NewScheme(channel.SchemeConfig{ReceiverAuthorizer: auth})
	require.NoError(t, err)
	dir, err := tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"llm","workerName":"w","x402Enabled":true,"priceUsd":"0.001",
	  "routes":[{"path":"/chat","schemes":["batch-settlement"],"maxPriceUsd":"0.001"}]}]}`))
	require.NoError(t, err)
	var calls atomic.Int64
	worker := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		time.Sleep(5 * time.Millisecond)
		_, _ = io.WriteString(w, "answer")
	})
	var replicas []*httptest.Server
	for i := 0; i < 2; i++ {
		rdb := goredis.NewClient(opts)
		t.Cleanup(func() { _ = rdb.Close() })
		kvs := redis.New(rdb, redis.Config{Prefix: prefix})
		svc, err := channel.New(kvs, channel.Config{Scheme: sc, Facilitator: lf})
		require.NoError(t, err)
		led, err := ledger.New(memory.NewLedger(), ledger.Config{})
		require.NoError(t, err)
		lim, err := quota.New(kvs, quota.Config{})
		require.NoError(t, err)
		stage, err := payment.NewStage(payment.Config{Facilitator: lf, KV: kvs, Ledger: led, Meter: lim, PayTo: payTo,
			Schemes: []x402.Scheme{exact.New(), svc.Scheme()}, Channels: channel.StageChannels(svc)})
		require.NoError(t, err)
		d, err := dispatch.NewDispatcher(dispatch.Config{Tenants: tenant.NewRegistry(dir),
			Fetcher: dispatch.NewHandlerFetcher(map[string]http.Handler{"w": worker}), Stages: []dispatch.Stage{lim.Stage(), stage}})
		require.NoError(t, err)
		srv := httptest.NewServer(d)
		t.Cleanup(srv.Close)
		replicas = append(replicas, srv)
	}
	get := func(srv *httptest.Server, p *x402.Payment, agent string) int {
		req, err := http.NewRequest("GET", srv.URL+"/t/llm/chat", nil)
		require.NoError(t, err)
		req.Header.Set("X-Agent-Id", agent)
		if p != nil {
			req.Header.Set("PAYMENT-SIGNATURE", base64.StdEncoding.EncodeToString(p.Raw))
		}
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	// The requirement, from a challenge; a deposit through replica 0.
	resp, err := http.Get(replicas[0].URL + "/t/llm/chat")
	require.NoError(t, err)
	resp.Body.Close()
	pr, err := x402.DecodePaymentRequired(resp.Header.Get("PAYMENT-REQUIRED"))
	require.NoError(t, err)
	req := x402.RequirementFromV2(pr.Accepts[0], pr.Resource)
	key, err := secp256k1.GeneratePrivateKey()
	require.NoError(t, err)
	cl := channel.NewClient(key)
	cfg, err := cl.ChannelConfig(req, channel.RandomSalt())
	require.NoError(t, err)
	now := time.Now()
	pl, err := cl.DepositPayload(req, cfg, 1_000_000, 1000, now.Add(-time.Minute), now.Add(time.Minute))
	require.NoError(t, err)
	dep, err := channel.Envelope(req, pl)
	require.NoError(t, err)
	require.Equal(t, 200, get(replicas[0], dep, "depositor"))
	require.Equal(t, int64(1), calls.Load())

	vp, err := cl.VoucherPayload(req, cfg, 2000)
	require.NoError(t, err)
	v, err := channel.Envelope(req, vp)
	require.NoError(t, err)
	var served atomic.Int64
	codes := make(chan int, 100)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			c := get(replicas[i%2], v, "agent-"+uuid.NewString())
			if c == 200 {
				served.Add(1)
			}
			codes <- c
		}()
	}
	close(start)
	wg.Wait()
	close(codes)
	for c := range codes {
		require.Contains(t, []int{200, 402, 409}, c)
	}
	require.Equal(t, int64(1), served.Load(), "one voucher, one served request, across replicas")
	require.Equal(t, int64(2), calls.Load())
}
