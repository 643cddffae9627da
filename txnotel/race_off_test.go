//go:build !race

package txnotel_test

const raceEnabled = false
