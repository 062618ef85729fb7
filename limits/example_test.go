package limits_test

import (
	"fmt"

	"github.com/402claw/dispatcher/limits"
)

func ExampleResolveDispatchLimits() {
	// A pro tenant lowers its CPU budget and asks for more subrequests
	// than its plan allows: the raise is ignored.
	l := limits.ResolveDispatchLimits("Pro", limits.Overrides{CPUMs: 120, SubRequests: 500})
	fmt.Printf("cpuMs=%d subRequests=%d\n", l.CPUMs, l.SubRequests)
	fmt.Printf("%+v\n", limits.ToCloudflareConfig(l))
	// Output:
	// cpuMs=120 subRequests=50
	// {CPUMs:120 Subrequests:50}
}
