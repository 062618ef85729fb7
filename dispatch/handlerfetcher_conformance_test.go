package dispatch_test

import (
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/402claw/dispatcher/dispatch"
	"github.com/402claw/dispatcher/dispatch/fetchertest"
)

// handlerHarness runs the suite's workers in process. A worker goes over
// its limits the only way an in-process worker can: by asking its
// outbound client for more subrequests than the request's Budget allows.
// The answer is buffered, so Streams is false.
var handlerHarness = fetchertest.Harness{
	New: func(tb testing.TB, workers map[string]http.Handler) dispatch.Fetcher {
		return dispatch.NewHandlerFetcher(workers)
	},
	CanLimit:  true,
	OverLimit: http.HandlerFunc(overSubrequests),
	Streams:   false,
}

// overSubrequests spends subrequests until the outbound client refuses
// one, then answers as if all went well: the fetcher must still report the
// breach instead of this answer.
func overSubrequests(w http.ResponseWriter, r *http.Request) {
	c := dispatch.OutboundClient(r.Context(), noNetwork{})
	for range 10_000 {
		resp, err := c.Get("http://subrequest.invalid/")
		if errors.Is(err, dispatch.ErrSubrequestLimit) {
			break
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		resp.Body.Close()
	}
	_, _ = io.WriteString(w, "all fine, honestly")
}

// noNetwork answers every subrequest with 204 without sending it.
type noNetwork struct{}

func (noNetwork) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusNoContent, Body: http.NoBody, Header: make(http.Header), Request: r}, nil
}

func TestHandlerFetcherConformance(t *testing.T) {
	t.Parallel()
	fetchertest.Run(t, handlerHarness)
}

func BenchmarkHandlerFetcher(b *testing.B) {
	fetchertest.Benchmark(b, handlerHarness)
}
