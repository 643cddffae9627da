package main

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
)

func TestTraceLine(t *testing.T) {
	at := time.Date(2026, 11, 27, 13, 49, 20, 177_000_000, time.UTC)
	s := txn.AdmissionStats{Limit: 1, Ceiling: 16, InFlight: 1, Queued: 15, RetryLimit: 4, RetryCeiling: 4, RetryInFlight: 2, RetryQueued: 3}
	assert.Equal(t, "admission 13:49:20.177 adaptive  limit 1/16 running 1 queued 15 | retry lane limit 4/4 running 2 queued 3",
		traceLine(at, "adaptive", s))
}

// The trace of each process is taken out of its standard error, which
// keeps the rest for error messages, and the processes' lines are merged
// in time order, each naming its process.
func TestMergeTraces(t *testing.T) {
	p1, rest := splitTrace([]byte("admission 13:00:00.100 adaptive  limit 1/16\nsomething failed\nadmission 13:00:00.350 adaptive  limit 2/16\n"))
	assert.Equal(t, "something failed\n", rest)
	p2, rest := splitTrace([]byte("admission 13:00:00.100 adaptive  limit 3/16\nadmission 13:00:00.200 adaptive  limit 4/16"))
	assert.Empty(t, rest)
	assert.Equal(t, []string{
		"admission process 1 13:00:00.100 adaptive  limit 1/16",
		"admission process 2 13:00:00.100 adaptive  limit 3/16",
		"admission process 2 13:00:00.200 adaptive  limit 4/16",
		"admission process 1 13:00:00.350 adaptive  limit 2/16",
	}, mergeTraces([][]string{p1, p2}))
	assert.Empty(t, mergeTraces([][]string{nil, nil}))
}

// lineWriter hands every write to a channel.
type lineWriter struct {
	mu    sync.Mutex
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case w.lines <- string(p):
	default:
	}
	return len(p), nil
}

// traceAdmission writes the Runner's state until stopped, and stop waits
// for its goroutine (the package's leak check would catch one left over).
func TestTraceAdmissionWritesUntilStopped(t *testing.T) {
	w := &lineWriter{lines: make(chan string, 1)}
	stop := traceAdmission(w, time.Millisecond, "adaptive", func() txn.AdmissionStats {
		return txn.AdmissionStats{Limit: 5, Ceiling: 8}
	})
	line := <-w.lines
	stop()
	require.True(t, strings.HasPrefix(line, tracePrefix), line)
	assert.Contains(t, line, " adaptive  limit 5/8 running 0 queued 0 | retry lane limit 0/0")
}

// --admission-trace prints the Runner's state while the arm runs, beside
// the progress output, and none for the plain arm, which has no Runner;
// with --processes, whose children run with --quiet, the parent prints
// every process's lines.
func TestAdmissionTraceRun(t *testing.T) {
	code, _, errOut := runArgs(t, nil, "--duration", "300ms", "--policy", "plain,adaptive", "--admission-trace", "10ms",
		"--dsn", t.TempDir()+"/trace.db")
	require.Equal(t, exitOK, code, errOut)
	lines := traceLines(errOut)
	require.NotEmpty(t, lines, errOut)
	for _, l := range lines {
		assert.Contains(t, l, " adaptive  limit ")
	}

	t.Setenv(asMainEnv, "1")
	code, _, errOut = runArgs(t, nil, "--duration", "300ms", "--quiet", "--policy", "adaptive", "--admission-trace", "50ms",
		"--processes", "2", "--dsn", t.TempDir()+"/trace2.db")
	require.Equal(t, exitOK, code, errOut)
	lines = traceLines(errOut)
	assert.True(t, slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "admission process 1 ") }), errOut)
	assert.True(t, slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "admission process 2 ") }), errOut)
}

func traceLines(stderr string) []string {
	var out []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, tracePrefix) {
			out = append(out, l)
		}
	}
	return out
}
