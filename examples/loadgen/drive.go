package main

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// drive sends requests from conc connections for d and counts the 200s and
// the rest: each connection asks next for its next request (c is the
// connection's index) until d has passed. A next that fails stops that
// connection and its first error is returned. Requests cut short by the end
// of d count as neither.
func drive(ctx context.Context, client *http.Client, conc int, d time.Duration, next func(ctx context.Context, c int) (*http.Request, error)) (ok, other int64, elapsed time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var nOK, nOther atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < conc; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, err := next(ctx, c)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						nOther.Add(1)
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					nOK.Add(1)
				} else {
					nOther.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if e, _ := firstErr.Load().(error); e != nil {
		return 0, 0, 0, e
	}
	return nOK.Load(), nOther.Load(), time.Since(start), nil
}
