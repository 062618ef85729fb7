//go:build !unix

package payment_test

import "time"

// benchProcessCPU cannot read the process's CPU time on this system: the
// scheme benchmarks then report wall time alone.
func benchProcessCPU() (time.Duration, bool) { return 0, false }
