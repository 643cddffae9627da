package main

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The commit timeline of --timeline: how an arm's goodput develops from
// the start of its first measured slice, to see a cold start (--cold)
// settle.

// Parameters of the timeline.
const (
	// minSteadyWindow is the shortest window whose rate is compared with
	// the steady rate; the window is 5 intervals when that is longer.
	minSteadyWindow = 500 * time.Millisecond
	// steadyWindowIntervals is the window's length in intervals.
	steadyWindowIntervals = 5
	// steadyShare is the share of the steady rate a window must reach.
	steadyShare = 0.9
	// timelineShown is how many intervals the table prints.
	timelineShown = 40
)

// timeline is an arm's commits over its measured time. The arm's slices
// are laid end to end, each with its drain: time 0 is the start of its
// first measured slice, and with several rounds the first slice ends at
// --duration/--rounds plus its drain.
type timeline struct {
	// IntervalMs is the length of an interval.
	IntervalMs float64 `json:"interval_ms"`
	// Counts are the commits of each interval [k·interval, (k+1)·interval)
	// of the arm's measured time; a commit at its very end counts in the
	// last one.
	Counts []int64 `json:"commits_per_interval"`
	// MeasuredSeconds is the arm's measured time, its drains included.
	MeasuredSeconds float64 `json:"measured_seconds"`
	// SteadyFromSeconds is where the last half of the measured time
	// begins.
	SteadyFromSeconds float64 `json:"steady_from_seconds"`
	// SteadyCommitsPerSecond is the goodput over the last half of the
	// measured time.
	SteadyCommitsPerSecond float64 `json:"steady_commits_per_second"`
	// WindowSeconds is the length of the windows compared with the steady
	// rate: 500 ms, or 5 intervals if that is longer.
	WindowSeconds float64 `json:"window_seconds"`
	// TimeToSteadySeconds is the end of the first window, among those
	// starting at every multiple of the interval and ending within the
	// measured time, whose goodput is at least 0.9 × the steady goodput;
	// null when none is (or when nothing committed in the last half).
	TimeToSteadySeconds *float64 `json:"time_to_steady_seconds"`
	// WindowCommitsPerSecond is the goodput of that window.
	WindowCommitsPerSecond float64 `json:"window_commits_per_second,omitempty"`
}

// computeTimeline returns the timeline of commits (each commit's time from
// the start of the arm's measured time, in any order) over a measured time
// of total, in intervals of interval.
func computeTimeline(commits []time.Duration, total, interval time.Duration) timeline {
	tl := timeline{IntervalMs: ms(interval), MeasuredSeconds: total.Seconds()}
	window := max(minSteadyWindow, steadyWindowIntervals*interval)
	tl.WindowSeconds = window.Seconds()
	if interval <= 0 || total <= 0 {
		return tl
	}
	s := slices.Clone(commits)
	slices.Sort(s)
	n := int((total + interval - 1) / interval)
	tl.Counts = make([]int64, n)
	for _, t := range s {
		k := int(t / interval)
		tl.Counts[max(0, min(k, n-1))]++
	}
	// before returns how many commits came before t; at the end of the
	// measured time, all of them.
	before := func(t time.Duration) int {
		if t >= total {
			return len(s)
		}
		return sort.Search(len(s), func(i int) bool { return s[i] >= t })
	}
	half := total / 2
	tl.SteadyFromSeconds = half.Seconds()
	tl.SteadyCommitsPerSecond = float64(len(s)-before(half)) / (total - half).Seconds()
	if tl.SteadyCommitsPerSecond == 0 {
		return tl
	}
	for start := time.Duration(0); start+window <= total; start += interval {
		rate := float64(before(start+window)-before(start)) / window.Seconds()
		if rate >= steadyShare*tl.SteadyCommitsPerSecond {
			end := (start + window).Seconds()
			tl.TimeToSteadySeconds = &end
			tl.WindowCommitsPerSecond = rate
			break
		}
	}
	return tl
}

// printTimelines writes each arm's timeline, if the run recorded them.
func printTimelines(w io.Writer, r *report) {
	rows := r.Results
	if r.Baseline != nil {
		rows = append([]result{*r.Baseline}, rows...)
	}
	for _, res := range rows {
		tl := res.Timeline
		if tl == nil {
			continue
		}
		interval := time.Duration(tl.IntervalMs * float64(time.Millisecond))
		shown := tl.Counts[:min(len(tl.Counts), timelineShown)]
		counts := make([]string, len(shown))
		for i, n := range shown {
			counts[i] = strconv.FormatInt(n, 10)
		}
		of := ""
		if len(shown) < len(tl.Counts) {
			of = fmt.Sprintf(", the first %d of %d", len(shown), len(tl.Counts))
		}
		fmt.Fprintf(w, "timeline of %s, commits per %v from the start of its first measured slice%s:\n  %s\n",
			res.Policy, interval, of, strings.Join(counts, " "))
		window := time.Duration(tl.WindowSeconds * float64(time.Second))
		fmt.Fprintf(w, "  steady %.0f/s (its last half, %.1fs to %.1fs); ", tl.SteadyCommitsPerSecond, tl.SteadyFromSeconds, tl.MeasuredSeconds)
		if tl.TimeToSteadySeconds == nil {
			fmt.Fprintf(w, "time to steady: no %v window reached %.0f%% of it\n\n", window, 100*steadyShare)
			continue
		}
		end := *tl.TimeToSteadySeconds
		fmt.Fprintf(w, "time to steady %.1fs (the first %v window at %.0f%% of it or more: %.1fs to %.1fs, %.0f/s)\n",
			end, window, 100*steadyShare, end-tl.WindowSeconds, end, tl.WindowCommitsPerSecond)
		fmt.Fprintln(w)
	}
	if r.Timeline != "" && r.Rounds > 1 {
		fmt.Fprintf(w, "(each arm's slices laid end to end, drains included: its first slice, the cold start, ends at %s/%d plus its drain)\n\n", r.Duration, r.Rounds)
	}
}
