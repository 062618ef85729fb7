//go:build unix

package eip712_test

import (
	"syscall"
	"testing"
	"time"
)

// reportCPU reports the process's user and system CPU time per op since
// cpu0 (see processCPU): on a shared machine wall time moves with the
// neighbours' load, CPU time much less.
func reportCPU(b *testing.B, cpu0 time.Duration) {
	if cpu1 := processCPU(); cpu1 > 0 && b.N > 0 {
		b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
