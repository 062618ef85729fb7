//go:build unix

package tenant_test

import (
	"syscall"
	"time"
)

// benchProcessCPU returns the CPU time (user and system) the process has
// used so far, and whether it could be read. BenchmarkPriceFor50CPU
// reports CPU per lookup beside wall time: on a shared machine wall time moves
// with the neighbours' load, CPU time much less.
func benchProcessCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
