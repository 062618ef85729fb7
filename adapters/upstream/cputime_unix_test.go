//go:build unix

package upstream_test

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time (user and system) the process has used.
// The benchmarks report CPU per request beside wall time: on a shared
// machine wall time moves with the neighbours' load, CPU per request much
// less.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
