package dispatch

import (
	"time"

	"github.com/402claw/dispatcher/limits"
)

// EventType names a lifecycle event.
type EventType string

// Lifecycle event types.
const (
	EventStart   EventType = "start"
	EventSuccess EventType = "success"
	EventFailure EventType = "failure"
)

// Event is a lifecycle event of one tenant request. Start is emitted once
// the tenant is known; exactly one of Success (the worker's answer, or a
// stage's own answer such as a 402 challenge, went out) or Failure (the
// gateway answered with an error) follows.
type Event struct {
	Type      EventType
	Time      time.Time
	RequestID string
	Tenant    string
	Worker    string
	Plan      string
	Limits    limits.Limits
	// Status is the HTTP status answered (0 for Start).
	Status int
	// Code is the error code of a Failure.
	Code string
	// Lifecycle is the request's analytics outcome (final events only).
	Lifecycle Lifecycle
	// Duration is the time from the request's arrival to the answer.
	Duration time.Duration
	// Exchange is the request's state, for sinks that derive more (usage
	// events). Sinks must not keep it or change it.
	Exchange *Exchange `json:"-"`
}

// EventSink receives lifecycle events. Emit must not block the request: a
// sink that does I/O buffers (see metrics.NewAsyncSink) and counts drops.
type EventSink interface {
	Emit(Event)
}

// EventSinkFunc adapts a function to an EventSink.
type EventSinkFunc func(Event)

// Emit calls f(e).
func (f EventSinkFunc) Emit(e Event) { f(e) }

type discardSink struct{}

func (discardSink) Emit(Event) {}

// MultiSink sends every event to each sink in turn.
func MultiSink(sinks ...EventSink) EventSink {
	return EventSinkFunc(func(e Event) {
		for _, s := range sinks {
			s.Emit(e)
		}
	})
}
