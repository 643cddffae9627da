package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/txnkit/txn"
)

// lockedWriter serializes the writes of several goroutines to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// tracePrefix starts every line of the admission trace.
const tracePrefix = "admission "

// traceTime is the layout of a trace line's wall-clock time, which orders
// the lines of several processes.
const traceTime = "15:04:05.000"

// traceAdmission writes a trace line for arm every interval, until the
// returned stop is called.
func traceAdmission(out io.Writer, interval time.Duration, arm string, stats func() txn.AdmissionStats) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go tick(interval, done, finished, func(now time.Time) {
		fmt.Fprintln(out, traceLine(now, arm, stats()))
	})
	return func() {
		close(done)
		<-finished
	}
}

// traceLine is one line of the admission trace: the time, the arm, and its
// Runner's AdmissionStats.
func traceLine(now time.Time, arm string, s txn.AdmissionStats) string {
	return fmt.Sprintf("%s%s %-9s limit %d/%d running %d queued %d | retry lane limit %d/%d running %d queued %d",
		tracePrefix, now.Format(traceTime), arm, s.Limit, s.Ceiling, s.InFlight, s.Queued,
		s.RetryLimit, s.RetryCeiling, s.RetryInFlight, s.RetryQueued)
}

// splitTrace separates the admission trace of a child process's standard
// error from the rest.
func splitTrace(stderr []byte) (trace []string, rest string) {
	var other strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(stderr))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, tracePrefix) {
			trace = append(trace, line)
			continue
		}
		other.WriteString(line)
		other.WriteByte('\n')
	}
	return trace, other.String()
}

// mergeTraces merges the admission traces of processes (one slice of lines
// per process, in its order) into one list in time order, each line
// naming its process ("process 1" for traces[0]). Lines of one time keep
// the order of their processes.
func mergeTraces(traces [][]string) []string {
	type entry struct {
		at   string
		line string
	}
	var all []entry
	for i, lines := range traces {
		for _, l := range lines {
			rest := strings.TrimPrefix(l, tracePrefix)
			at, _, _ := strings.Cut(rest, " ")
			all = append(all, entry{at: at, line: fmt.Sprintf("%sprocess %d %s", tracePrefix, i+1, rest)})
		}
	}
	// The times are in one layout of fixed width within a day, so they
	// sort as text.
	slices.SortStableFunc(all, func(a, b entry) int { return strings.Compare(a.at, b.at) })
	out := make([]string, len(all))
	for i, e := range all {
		out[i] = e.line
	}
	return out
}
