package tenant_test

import "testing"

// BenchmarkPriceFor50CPU is BenchmarkPriceFor50 (a three-segment path
// priced on a tenant with 50 routes) reporting, beside wall time, the
// process's CPU time per lookup (cpu-ns/op). On a loaded shared machine
// the wall time of a 150 ns operation includes the time the goroutine
// waited for a core; the CPU time does not.
//
//	go test -run '^$' -bench PriceFor50 -benchmem -count 5 ./tenant/
func BenchmarkPriceFor50CPU(b *testing.B) {
	d := fiftyRoutes(b)
	s, _ := d.Lookup("big")
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, ok := benchProcessCPU()
	for i := 0; i < b.N; i++ {
		if p := s.PriceFor("GET", "/v7/items/42"); p.Route == nil {
			b.Fatal("no route")
		}
	}
	b.StopTimer()
	if cpu1, _ := benchProcessCPU(); ok {
		b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
	}
}
