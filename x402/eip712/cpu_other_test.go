//go:build !unix

package eip712_test

import (
	"testing"
	"time"
)

func reportCPU(*testing.B, time.Duration) {}

func processCPU() time.Duration { return 0 }
