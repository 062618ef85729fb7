package memory_test

import (
	"context"
	"fmt"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/kv"
)

// A usage quota of 2 is one conditional increment per request.
func ExampleKV_Incr() {
	ctx := context.Background()
	store := memory.NewKV()
	quota := kv.Increment{Delta: 1, Max: 2}
	for i := 0; i < 3; i++ {
		n, ok, _ := store.Incr(ctx, "q:{acme}:use:d:2026-11-24", quota)
		fmt.Println(n, ok)
	}
	// Output:
	// 1 true
	// 2 true
	// 2 false
}
