package redis_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/redis"
	"github.com/402claw/dispatcher/kv"
)

// closedAddr returns a loopback address nobody listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// requireFailClosed asserts that every operation returns an error, and that
// no error could be mistaken for an admission or a missing key.
func requireFailClosed(t *testing.T, s *redis.KV) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, ok, err := s.Incr(ctx, "q:{acme}:day", kv.Increment{Delta: 1, Max: 10})
	require.Error(t, err)
	require.False(t, ok, "an error must never admit")
	require.Zero(t, n)
	require.Contains(t, err.Error(), "redis kv: incr")

	vals, refused, err := s.IncrAll(ctx, []string{"{a}:1", "{a}:2"}, []kv.Increment{{Delta: 1, Max: 10}, {Delta: 1, Max: 10}})
	require.Error(t, err)
	require.Nil(t, vals)
	require.Equal(t, -1, refused)

	_, err = s.Get(ctx, "k")
	require.Error(t, err)
	require.NotErrorIs(t, err, kv.ErrNotFound, "a dead server is not a missing key")

	ok, err = s.SetNX(ctx, "lock", []byte("x"), time.Minute)
	require.Error(t, err)
	require.False(t, ok)
	require.Error(t, s.Set(ctx, "k", []byte("x"), 0))
	require.Error(t, s.Delete(ctx, "k"))
}

func TestFailsClosedOnRefusedConnection(t *testing.T) {
	t.Parallel()
	c := goredis.NewClient(&goredis.Options{Addr: closedAddr(t), MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = c.Close() })
	s := redis.New(c, redis.Config{Prefix: "fault:"})
	requireFailClosed(t, s)
	_, _, err := s.Incr(context.Background(), "k", kv.Increment{Delta: 1, Max: 1})
	var opErr *net.OpError
	require.ErrorAs(t, err, &opErr, "the network error stays inspectable")
}

// TestFailsClosedWhenServerGoesAway runs through a TCP proxy that the test
// stops mid-way, as a Redis crash or a network partition would.
func TestFailsClosedWhenServerGoesAway(t *testing.T) {
	t.Parallel()
	opts, err := goredis.ParseURL(redisURL(t))
	require.NoError(t, err)
	p := startProxy(t, opts.Addr)
	opts.Addr = p.addr()
	opts.MaxRetries = -1
	opts.DialTimeout = time.Second
	opts.ReadTimeout = time.Second
	c := goredis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	s := redis.New(c, redis.Config{Prefix: testPrefix(t, newClient(t))})

	ctx := context.Background()
	n, ok, err := s.Incr(ctx, "q:{acme}:day", kv.Increment{Delta: 1, Max: 10})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(1), n)

	p.stop()
	requireFailClosed(t, s)
}

type proxy struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{l: l}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				_ = in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				defer p.wg.Done()
				_, _ = io.Copy(dst, src)
				_ = dst.Close()
				_ = src.Close()
			}
			p.wg.Add(2)
			go pipe(in, out)
			go pipe(out, in)
		}
	}()
	t.Cleanup(p.stop)
	return p
}

func (p *proxy) addr() string { return p.l.Addr().String() }

// stop closes the listener and every proxied connection: the client then
// sees resets on pooled connections and refusals on new ones.
func (p *proxy) stop() {
	if err := p.l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		panic(err)
	}
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}
