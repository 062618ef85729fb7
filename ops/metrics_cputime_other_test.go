//go:build !unix

package ops_test

import "time"

// obsProcessCPU is not measured on this platform; CPU metrics read 0.
func obsProcessCPU() time.Duration { return 0 }
