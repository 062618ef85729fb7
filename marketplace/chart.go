package marketplace

import (
	"time"
)

// chart is a bar chart of calls per hour, laid out on the server so the
// page needs no script to draw it. Coordinates are in SVG user units.
type chart struct {
	Width, Height, Base int
	MidX, MidY          int
	Total               int64
	Bars                []bar
	Ticks               []tick
}

type bar struct {
	X, Y, W, H int
	Calls      int64
	Label      string
}

type tick struct {
	X, Y int
	Text string
}

const (
	chartWidth  = 720
	chartHeight = 140
	chartBase   = 120 // y of the axis; labels below it
	chartTop    = 8
)

// newChart lays out one bar per hour starting at from. A bar's height is
// proportional to the busiest hour; an hour with calls is at least 1 unit
// tall so it never disappears.
func newChart(from time.Time, perHour []int64) chart {
	c := chart{Width: chartWidth, Height: chartHeight, Base: chartBase, MidX: chartWidth / 2, MidY: chartBase / 2}
	n := len(perHour)
	if n == 0 {
		return c
	}
	var peak int64
	for _, v := range perHour {
		peak = max(peak, v)
		c.Total += v
	}
	slot := chartWidth / n
	w := max(slot-4, 1)
	for i, v := range perHour {
		h := 0
		if peak > 0 && v > 0 {
			h = max(int(int64(chartBase-chartTop)*v/peak), 1)
		}
		hour := from.Add(time.Duration(i) * time.Hour).UTC()
		c.Bars = append(c.Bars, bar{
			X: i*slot + 2, Y: chartBase - h, W: w, H: h, Calls: v,
			Label: hour.Format("Jan 2 15:00"),
		})
		if i%6 == 0 {
			c.Ticks = append(c.Ticks, tick{X: i*slot + 2, Y: chartBase + 14, Text: hour.Format("15:00")})
		}
	}
	return c
}
