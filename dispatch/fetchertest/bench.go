package fetchertest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/402claw/dispatcher/dispatch"
)

// Benchmark measures one fetch through the harness's fetcher: a small GET,
// a 64 KiB POST echoed back, and small GETs from parallel goroutines. Every
// answer is read to the end and checked, so a fetcher cannot win by
// skipping work.
func Benchmark(b *testing.B, h Harness) {
	small := []byte(`{"ok":true}`)
	workers := map[string]http.Handler{
		"w-small": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(small)
		}),
		"w-echo": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Read it all first: an HTTP/1 server may close the request
			// body once the response starts.
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			_, _ = w.Write(body)
		}),
	}
	run := func(f dispatch.Fetcher, c call, want []byte) error {
		req, p := c.newRequest(context.Background())
		resp, err := f.Fetch(req.Context(), req, p)
		if err != nil {
			return err
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, want) {
			return fmt.Errorf("got %d bytes (%v), want %d", len(got), err, len(want))
		}
		return nil
	}
	b.Run("GET", func(b *testing.B) {
		f := h.New(b, workers)
		b.ReportAllocs()
		for b.Loop() {
			if err := run(f, call{worker: "w-small", path: "/v1/rows", query: "country=FR"}, small); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("POST64KiB", func(b *testing.B) {
		f := h.New(b, workers)
		body, _ := io.ReadAll(&pattern{n: 64 << 10})
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			if err := run(f, call{worker: "w-echo", method: http.MethodPost, path: "/echo", body: body}, body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("GETParallel", func(b *testing.B) {
		f := h.New(b, workers)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := run(f, call{worker: "w-small", path: "/v1/rows"}, small); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
