//go:build race

package sqlite_test

// raceEnabled shortens the longest randomized tests under -race.
const raceEnabled = true
