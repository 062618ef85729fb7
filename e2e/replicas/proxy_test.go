package replicas_test

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// proxy forwards connections on a fixed 127.0.0.1 port to a target. Stop
// closes the listener and every connection (the service "goes away": new
// connections are refused); Start listens on the same port again.
type proxy struct {
	target string
	addr   string
	mu     sync.Mutex
	l      net.Listener
	conns  map[net.Conn]struct{}
}

func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{target: target, addr: l.Addr().String(), l: l, conns: map[net.Conn]struct{}{}}
	go p.serve(l)
	t.Cleanup(p.Stop)
	return p
}

func (p *proxy) serve(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

func (p *proxy) forward(c net.Conn) {
	u, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	if p.l == nil { // stopped meanwhile
		p.mu.Unlock()
		_ = c.Close()
		_ = u.Close()
		return
	}
	p.conns[c], p.conns[u] = struct{}{}, struct{}{}
	p.mu.Unlock()
	go func() { _, _ = io.Copy(u, c); _ = u.Close() }()
	_, _ = io.Copy(c, u)
	_ = c.Close()
}

// Stop refuses new connections and cuts the open ones.
func (p *proxy) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		_ = p.l.Close()
		p.l = nil
	}
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}

// Start accepts connections again, on the same address.
func (p *proxy) Start(t testing.TB) {
	t.Helper()
	var l net.Listener
	require.Eventually(t, func() bool {
		var err error
		l, err = net.Listen("tcp", p.addr)
		return err == nil
	}, 5*time.Second, 20*time.Millisecond, "listen on %s again", p.addr)
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
	go p.serve(l)
}
