//go:build unix

package ops_test

import (
	"syscall"
	"time"
)

// obsProcessCPU returns the CPU time (user and system) the process has
// used. The paired benchmark reports CPU per request beside wall time: on
// a shared machine wall time moves with the neighbours' load, CPU time much
// less.
func obsProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
