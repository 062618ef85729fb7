package quota

import (
	"strconv"
	"sync"
	"time"
)

// Window kinds, as they appear in X-Usage-Window and X-Spend-Window.
const (
	Day   = "day"
	Month = "month"
)

// Window is one calendar UTC window of a usage quota or spend cap: a day
// [00:00, next 00:00) or a month [the 1st 00:00, the next month's 1st 00:00).
type Window struct {
	// Kind is Day or Month.
	Kind string
	// ID names the window in counter keys: "2026-11-24" or "2026-11".
	ID string
	// Start is the first instant of the window; End the first instant after
	// it, which is when its counters reset.
	Start, End time.Time
}

// DayWindow returns the UTC day that contains t.
func DayWindow(t time.Time) Window {
	y, m, d := t.UTC().Date()
	start := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	return Window{Kind: Day, ID: dateID(y, m, d, true), Start: start, End: time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)}
}

// MonthWindow returns the UTC month that contains t.
func MonthWindow(t time.Time) Window {
	y, m, _ := t.UTC().Date()
	start := time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
	// time.Date normalises month 13 to January of the next year.
	return Window{Kind: Month, ID: dateID(y, m, 1, false), Start: start, End: time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC)}
}

// dateID formats YYYY-MM or YYYY-MM-DD without going through a layout.
func dateID(y int, m time.Month, d int, day bool) string {
	b := make([]byte, 0, 10)
	b = appendPad(b, y, 4)
	b = append(b, '-')
	b = appendPad(b, int(m), 2)
	if day {
		b = append(b, '-')
		b = appendPad(b, d, 2)
	}
	return string(b)
}

func appendPad(b []byte, v, width int) []byte {
	s := strconv.Itoa(v)
	for i := len(s); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}

// calendar caches the day and month windows of one UTC day, so that the
// hot path does no date arithmetic and no formatting.
type calendar struct {
	keys         sync.Map // slug -> *tenantKeys, for this day's windows
	dayNum       int64    // days since the Unix epoch
	day, month   Window
	dayEndUS     int64 // Unix microseconds of day.End
	monthEndUS   int64
	dayEndUnix   int64 // Unix seconds of day.End
	monthEndUnix int64
}

const microsPerDay = 86_400_000_000

func dayNumber(us int64) int64 {
	d := us / microsPerDay
	if us%microsPerDay < 0 {
		d-- // floor for instants before 1970
	}
	return d
}

func newCalendar(now time.Time) *calendar {
	c := &calendar{dayNum: dayNumber(now.UnixMicro()), day: DayWindow(now), month: MonthWindow(now)}
	c.dayEndUS, c.monthEndUS = c.day.End.UnixMicro(), c.month.End.UnixMicro()
	c.dayEndUnix, c.monthEndUnix = c.day.End.Unix(), c.month.End.Unix()
	return c
}

// calendarAt returns the cached calendar of now's UTC day, replacing the
// cache when the day changed (or the injected clock went back).
func (l *Limiter) calendarAt(now time.Time, nowUS int64) *calendar {
	if c := l.cal.Load(); c != nil && c.dayNum == dayNumber(nowUS) {
		return c
	}
	c := newCalendar(now)
	l.cal.Store(c)
	return c
}

// ceilSeconds rounds a positive duration in microseconds up to whole
// seconds.
func ceilSeconds(us int64) int64 {
	if us <= 0 {
		return 0
	}
	return (us + 999_999) / 1_000_000
}

// ceilDuration rounds a positive duration up to whole seconds.
func ceilDuration(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// ceilUnix converts Unix microseconds to Unix seconds, rounding up.
func ceilUnix(us int64) int64 {
	s := us / 1_000_000
	if us%1_000_000 > 0 {
		s++
	}
	return s
}
