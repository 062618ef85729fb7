package metrics

import (
	"fmt"
	"net/url"
	"time"
)

// Window is an analytics time window. All windows are in UTC.
type Window string

// The analytics windows.
const (
	// WindowToday starts at 00:00 UTC today.
	WindowToday Window = "today"
	// WindowWeek starts at 00:00 UTC six days ago: today and the six
	// days before it.
	WindowWeek Window = "week"
	// WindowOverall covers all time.
	WindowOverall Window = "overall"
)

// Query-parameter defaults and bounds of the platform routes.
const (
	DefaultEventsLimit = 100
	MaxEventsLimit     = 1000
	DefaultTop         = 25
	MaxTop             = 100
	DefaultWindow      = WindowToday
)

// ParseWindow parses a window name; the empty string is DefaultWindow.
// Anything else is an error wrapping ErrInvalidQuery.
func ParseWindow(s string) (Window, error) {
	switch w := Window(s); w {
	case "":
		return DefaultWindow, nil
	case WindowToday, WindowWeek, WindowOverall:
		return w, nil
	}
	return "", fmt.Errorf("%w: window must be today, week or overall", ErrInvalidQuery)
}

// Range returns the window's rollup range at time now: From is the window's
// start (zero for overall) and To the end of now's hour, so events stamped
// later than the current hour are left out.
func (w Window) Range(now time.Time) RollupQuery {
	now = now.UTC()
	midnight := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	q := RollupQuery{To: HourOf(now).Add(time.Hour)}
	switch w {
	case WindowToday:
		q.From = midnight
	case WindowWeek:
		q.From = midnight.AddDate(0, 0, -6)
	}
	return q
}

// ParseCount parses a positive count from a query parameter: the empty
// string gives def, a value above max is clamped to max, and anything but
// 1 to 9 ASCII digits with a value of at least 1 is an error wrapping
// ErrInvalidQuery.
func ParseCount(s string, def, max int) (int, error) {
	if s == "" {
		return def, nil
	}
	if len(s) > 9 {
		// Nine digits cannot overflow an int; more is never meaningful.
		for _, c := range s {
			if c < '0' || c > '9' {
				return 0, fmt.Errorf("%w: %q is not a positive integer", ErrInvalidQuery, s)
			}
		}
		return max, nil
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: %q is not a positive integer", ErrInvalidQuery, s)
		}
		n = n*10 + int(c-'0')
	}
	if n < 1 {
		return 0, fmt.Errorf("%w: %q is not a positive integer", ErrInvalidQuery, s)
	}
	return min(n, max), nil
}

// single returns the only value of a query parameter; a repeated parameter
// is ambiguous and rejected.
func single(v url.Values, name string) (string, error) {
	switch vs := v[name]; len(vs) {
	case 0:
		return "", nil
	case 1:
		return vs[0], nil
	}
	return "", fmt.Errorf("%w: %s given more than once", ErrInvalidQuery, name)
}

// ParseEventsParams parses the query of GET /__platform/events: limit,
// default DefaultEventsLimit, at most MaxEventsLimit.
func ParseEventsParams(v url.Values) (limit int, err error) {
	s, err := single(v, "limit")
	if err != nil {
		return 0, err
	}
	limit, err = ParseCount(s, DefaultEventsLimit, MaxEventsLimit)
	if err != nil {
		return 0, fmt.Errorf("limit: %w", err)
	}
	return limit, nil
}

// ParseAnalyticsParams parses the query of GET /__platform/analytics:
// window (default DefaultWindow) and top (default DefaultTop, at most
// MaxTop).
func ParseAnalyticsParams(v url.Values) (Window, int, error) {
	s, err := single(v, "window")
	if err != nil {
		return "", 0, err
	}
	w, err := ParseWindow(s)
	if err != nil {
		return "", 0, err
	}
	if s, err = single(v, "top"); err != nil {
		return "", 0, err
	}
	top, err := ParseCount(s, DefaultTop, MaxTop)
	if err != nil {
		return "", 0, fmt.Errorf("top: %w", err)
	}
	return w, top, nil
}
