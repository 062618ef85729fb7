//go:build unix

package sqlite_test

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time (user and system) the process has used
// so far, and whether it could be read: benchmarks report CPU per op
// beside wall time, which on a shared machine moves with the neighbours'
// load (and here with the disk's fsyncs) far more.
func processCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
