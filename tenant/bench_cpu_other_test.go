//go:build !unix

package tenant_test

import "time"

// benchProcessCPU cannot read the process's CPU time on this system:
// BenchmarkPriceFor50CPU then reports wall time alone.
func benchProcessCPU() (time.Duration, bool) { return 0, false }
