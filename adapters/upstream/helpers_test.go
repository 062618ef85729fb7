package upstream_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/upstream"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/tenant"
)

// testDirectory has one tenant per worker behaviour the tests need. The
// slow tenant's 3 ms CPU budget is a 300 ms wall-clock budget
// (dispatch.DefaultWallClock); the others have seconds.
const testDirectory = `{"tenants":[
 {"slug":"acme","workerName":"w-acme","plan":"pro"},
 {"slug":"ghost","workerName":"w-missing"},
 {"slug":"down","workerName":"w-down"},
 {"slug":"slow","workerName":"w-slow","limits":{"cpuMs":3}},
 {"slug":"busy","workerName":"w-busy"}
]}`

// seen records what an upstream received.
type seen struct {
	mu  sync.Mutex
	req []*http.Request
}

func (s *seen) add(r *http.Request) {
	s.mu.Lock()
	s.req = append(s.req, r.Clone(r.Context()))
	s.mu.Unlock()
}

func (s *seen) last(t *testing.T) *http.Request {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	require.NotEmpty(t, s.req, "the upstream received nothing")
	return s.req[len(s.req)-1]
}

// newUpstream starts an httptest server running h and counts the
// connections it accepted.
func newUpstream(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

// refusedURL returns an http URL on a loopback port nobody listens on.
func refusedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return "http://" + addr
}

// newGateway serves a dispatcher over testDirectory with f as its fetcher.
func newGateway(t *testing.T, f dispatch.Fetcher) *httptest.Server {
	t.Helper()
	dir, err := tenant.ParseDirectory([]byte(testDirectory))
	require.NoError(t, err)
	d, err := dispatch.NewDispatcher(dispatch.Config{Tenants: tenant.NewRegistry(dir), Fetcher: f})
	require.NoError(t, err)
	gw := httptest.NewServer(d)
	t.Cleanup(gw.Close)
	return gw
}

func newFetcher(t *testing.T, workers map[string]string) *upstream.Fetcher {
	t.Helper()
	f, err := upstream.New(upstream.Config{Workers: workers})
	require.NoError(t, err)
	t.Cleanup(f.CloseIdleConnections)
	return f
}

// pattern is an endless reader of a fixed byte pattern that never allocates.
type pattern struct{ left int64 }

func (p *pattern) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	n := len(b)
	if int64(n) > p.left {
		n = int(p.left)
	}
	for i := range b[:n] {
		b[i] = byte('a' + i%26)
	}
	p.left -= int64(n)
	return n, nil
}

// allocatedBy returns how many bytes the process allocated while fn ran.
func allocatedBy(t *testing.T, fn func()) uint64 {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
