package upstream_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/402claw/dispatcher/adapters/upstream"
	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/tenant"
)

// benchClients is how many clients drive each front at once.
const benchClients = 32

// benchRig is a trivial upstream and two fronts over it: the dispatcher with
// the upstream fetcher, and a bare httputil.ReverseProxy. Both fronts use the
// same tuned transport configuration and pooled copy buffers, so the
// comparison measures the dispatcher's pipeline and the fetcher, not
// connection pool sizes or buffer allocation.
type benchRig struct {
	client             *http.Client
	dispatcherURL      string
	proxyURL           string
	closeAll           func()
	upstreamConns      atomic.Int64
	dispatcherFetcher  *upstream.Fetcher
	reverseProxyTransp *http.Transport
}

func newBenchRig(b *testing.B) *benchRig {
	b.Helper()
	rig := &benchRig{}
	body := []byte(`{"rows":[{"id":1,"name":"Lyon","country":"FR"}],"total":1}` + "\n")
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			rig.upstreamConns.Add(1)
		}
	}
	up.Start()

	f, err := upstream.New(upstream.Config{Workers: map[string]string{"bench-worker": up.URL}})
	if err != nil {
		b.Fatal(err)
	}
	dir, err := tenant.ParseDirectory([]byte(`{"tenants":[{"slug":"bench","workerName":"bench-worker","plan":"pro"}]}`))
	if err != nil {
		b.Fatal(err)
	}
	d, err := dispatch.NewDispatcher(dispatch.Config{Tenants: tenant.NewRegistry(dir), Fetcher: f})
	if err != nil {
		b.Fatal(err)
	}
	dfront := httptest.NewServer(d)

	target, _ := url.Parse(up.URL)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		},
		Transport:  upstream.NewTransport(upstream.TransportConfig{}),
		BufferPool: &bufferPool{},
	}
	pfront := httptest.NewServer(rp)

	ct := &http.Transport{
		MaxIdleConns:        4 * benchClients,
		MaxIdleConnsPerHost: 4 * benchClients,
		DisableCompression:  true,
		IdleConnTimeout:     time.Minute,
	}
	rig.client = &http.Client{Transport: ct}
	rig.dispatcherURL = dfront.URL + "/t/bench/rows?country=FR"
	rig.proxyURL = pfront.URL + "/rows?country=FR"
	rig.dispatcherFetcher = f
	rig.reverseProxyTransp = rp.Transport.(*http.Transport)
	rig.closeAll = func() {
		ct.CloseIdleConnections()
		f.CloseIdleConnections()
		rig.reverseProxyTransp.CloseIdleConnections()
		dfront.Close()
		pfront.Close()
		up.Close()
	}
	return rig
}

// bufferPool gives the reverse proxy pooled copy buffers, as the
// dispatcher has, so that the baseline does not allocate 32 KiB a request.
type bufferPool struct{ p sync.Pool }

func (bp *bufferPool) Get() []byte {
	if b, ok := bp.p.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, 32<<10)
}

func (bp *bufferPool) Put(b []byte) { bp.p.Put(&b) }

// drive sends n GET requests to u from benchClients goroutines and records
// each request's latency in lat[:n]. It returns the wall time taken.
func (rig *benchRig) drive(b *testing.B, u string, n int, lat []time.Duration) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range benchClients {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				t0 := time.Now()
				resp, err := rig.client.Get(u)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat[i] = time.Since(t0)
				if resp.StatusCode != http.StatusOK {
					b.Errorf("%s: status %d", u, resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

// warm opens the connection pools of both fronts so that neither pays for
// dialing inside the measurement.
func (rig *benchRig) warm(b *testing.B) {
	lat := make([]time.Duration, 4*benchClients)
	rig.drive(b, rig.dispatcherURL, len(lat), lat)
	rig.drive(b, rig.proxyURL, len(lat), lat)
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}

func reportLatency(b *testing.B, prefix string, lat []time.Duration) {
	s := slices.Clone(lat)
	slices.Sort(s)
	b.ReportMetric(float64(percentile(s, 0.50).Microseconds()), prefix+"p50-µs")
	b.ReportMetric(float64(percentile(s, 0.99).Microseconds()), prefix+"p99-µs")
}

// BenchmarkEndToEnd drives each front alone with 32 concurrent clients over
// loopback: ns/op is wall time per request (the inverse of throughput).
func BenchmarkEndToEnd(b *testing.B) {
	rig := newBenchRig(b)
	defer rig.closeAll()
	rig.warm(b)
	for _, front := range []struct{ name, url string }{
		{"dispatcher", rig.dispatcherURL},
		{"reverseproxy", rig.proxyURL},
	} {
		b.Run(front.name, func(b *testing.B) {
			lat := make([]time.Duration, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processCPU()
			elapsed := rig.drive(b, front.url, b.N, lat)
			cpu := processCPU() - cpu0
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/req")
			reportLatency(b, "", lat)
		})
	}
}

// BenchmarkDispatcherVsReverseProxy measures both fronts in the same run:
// each op is one request through the dispatcher and one through the bare
// reverse proxy, sent in interleaved rounds (alternating which front goes
// first) so that machine noise hits both alike. It reports each front's
// throughput and latency percentiles and the ratio of the dispatcher's
// throughput to the proxy's (target: at least 0.85).
func BenchmarkDispatcherVsReverseProxy(b *testing.B) {
	rig := newBenchRig(b)
	defer rig.closeAll()
	rig.warm(b)
	dLat := make([]time.Duration, b.N)
	pLat := make([]time.Duration, b.N)
	var dTime, pTime, dCPU, pCPU time.Duration
	measure := func(u string, lat []time.Duration, wall, cpu *time.Duration) {
		c0 := processCPU()
		*wall += rig.drive(b, u, len(lat), lat)
		*cpu += processCPU() - c0
	}
	round := max(b.N/20, 1)
	b.ResetTimer()
	for i, lo := 0, 0; lo < b.N; i, lo = i+1, lo+round {
		hi := min(lo+round, b.N)
		if i%2 == 0 {
			measure(rig.dispatcherURL, dLat[lo:hi], &dTime, &dCPU)
			measure(rig.proxyURL, pLat[lo:hi], &pTime, &pCPU)
		} else {
			measure(rig.proxyURL, pLat[lo:hi], &pTime, &pCPU)
			measure(rig.dispatcherURL, dLat[lo:hi], &dTime, &dCPU)
		}
	}
	b.StopTimer()
	dRPS := float64(b.N) / dTime.Seconds()
	pRPS := float64(b.N) / pTime.Seconds()
	b.ReportMetric(dRPS, "dispatcher-req/s")
	b.ReportMetric(pRPS, "proxy-req/s")
	b.ReportMetric(dRPS/pRPS, "ratio")
	// CPU per request of the whole rig (client, front and upstream share
	// the process), and the throughput ratio it predicts on a machine
	// where the rig is CPU-bound and alone.
	b.ReportMetric(float64(dCPU.Microseconds())/float64(b.N), "dispatcher-cpu-µs/req")
	b.ReportMetric(float64(pCPU.Microseconds())/float64(b.N), "proxy-cpu-µs/req")
	if dCPU > 0 {
		b.ReportMetric(float64(pCPU)/float64(dCPU), "cpu-ratio")
	}
	reportLatency(b, "dispatcher-", dLat)
	reportLatency(b, "proxy-", pLat)
}
