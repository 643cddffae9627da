package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNextShapedSplitsHotAndCold(t *testing.T) {
	w := workload{accounts: 10, hotShare: 0.25, sorted: true}
	rng := rand.New(rand.NewPCG(1, 2))
	hot := 0
	const n = 20000
	for i := 0; i < n; i++ {
		tr := w.next(rng)
		require.NotEqual(t, tr.from, tr.to)
		if tr.hot {
			hot++
			assert.ElementsMatch(t, []int64{1, 2}, []int64{tr.from, tr.to})
			continue
		}
		assert.GreaterOrEqual(t, min(tr.from, tr.to), int64(3), "a cold transfer touched the hot pair")
		assert.LessOrEqual(t, max(tr.from, tr.to), int64(10))
	}
	assert.InDelta(t, 0.25, float64(hot)/n, 0.02)
}

func TestShapeFlags(t *testing.T) {
	_, err := parseFlags([]string{"--hot-share", "1.5"}, io.Discard)
	assert.ErrorContains(t, err, "--hot-share")
	_, err = parseFlags([]string{"--hot-share", "0.1", "--accounts", "3"}, io.Discard)
	assert.ErrorContains(t, err, "--accounts 4")
	_, err = parseFlags([]string{"--processes", "0"}, io.Discard)
	assert.ErrorContains(t, err, "--processes")
	_, err = parseFlags([]string{"--processes", "2"}, io.Discard)
	assert.ErrorContains(t, err, "SQLite needs --dsn")
	c, err := parseFlags([]string{"--compare"}, io.Discard)
	require.NoError(t, err)
	assert.NotContains(t, c.policies, "dbkeyed", "an opt-in policy runs only when named")
}

func TestChildArgs(t *testing.T) {
	got := childArgs([]string{"--backend", "postgres", "--processes", "4", "--json=out.json", "--plot", "p.svg", "--quiet", "--seed", "9", "--workers=16"}, 42)
	assert.Equal(t, []string{"--backend", "postgres", "--workers=16", "--child", "--quiet", "--json", "-", "--plot=", "--seed=42"}, got)
}

// TestChildArgsOfParsedFlags checks that the children of --processes get
// the command line's flags, values included, even a value that reads as
// the name of a flag the parent keeps to itself (--table-prefix json used
// to drop the --table-prefix's value and the next flag).
func TestChildArgsOfParsedFlags(t *testing.T) {
	c, err := parseFlags([]string{"--backend", "postgres", "--table-prefix", "json", "--workers", "2", "--dsn", "plot",
		"--processes", "3", "--seed", "5", "--quiet", "--compare"}, io.Discard)
	require.NoError(t, err)
	got := childArgs(c.shape.args, 42)
	assert.ElementsMatch(t, []string{"--backend=postgres", "--table-prefix=json", "--workers=2", "--dsn=plot", "--compare=true",
		"--child", "--quiet", "--json", "-", "--plot=", "--seed=42"}, got)
	child, err := parseFlags(got, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "json", child.tablePrefix)
	assert.Equal(t, 2, child.workers)
	assert.Equal(t, "plot", child.dsn)
	assert.True(t, child.shape.child)
}

func TestMergeReports(t *testing.T) {
	a := &report{Warmup: result{Commits: 1}, Results: []result{{Policy: "adaptive", Workers: 16, Commits: 100, Attempts: 120, CommitsPerSecond: 50, ElapsedSeconds: 2,
		LatencyMs: latencyMs{P99: 10}, Classes: map[string]classResult{classHot: {Commits: 10, CommitsPerSecond: 5, P99Ms: 30}}}}}
	b := &report{Warmup: result{Commits: 2}, Results: []result{{Policy: "adaptive", Workers: 16, Commits: 300, Attempts: 300, CommitsPerSecond: 150, ElapsedSeconds: 2.1,
		LatencyMs: latencyMs{P99: 4}, Classes: map[string]classResult{classHot: {Commits: 30, CommitsPerSecond: 15, P99Ms: 20}}}}}
	m := mergeReports([]*report{a, b})
	require.Len(t, m.Results, 1)
	r := m.Results[0]
	assert.Equal(t, int64(3), m.Warmup.Commits)
	assert.Equal(t, 32, r.Workers)
	assert.Equal(t, int64(400), r.Commits)
	assert.InDelta(t, 200, r.CommitsPerSecond, 1e-9, "processes ran side by side: goodput adds up")
	assert.InDelta(t, 1.05, r.AttemptsPerCommit, 1e-9)
	assert.Equal(t, 2.1, r.ElapsedSeconds)
	assert.Equal(t, 10.0, r.LatencyMs.P99, "the worst process's p99")
	assert.Equal(t, []float64{4, 10}, r.ProcessP99Ms)
	assert.Equal(t, int64(40), r.Classes[classHot].Commits)
	assert.Equal(t, 30.0, r.Classes[classHot].P99Ms)
}

// TestProcessDiesBeforeReporting runs two processes on one SQLite file,
// one of which is killed as it writes its report, after its transfers
// committed: the parent says which process failed and that the run is
// incomplete, reports no results, still checks the balances on the
// database, and exits with status 1. It used to print only "process 1:
// signal: killed:" and check nothing.
func TestProcessDiesBeforeReporting(t *testing.T) {
	t.Setenv(asMainEnv, "1")
	t.Setenv(dieTokenEnv, filepath.Join(t.TempDir(), "die"))
	jsonPath := filepath.Join(t.TempDir(), "r.json")
	code, out, errOut := runArgs(t, nil, "--duration", "200ms", "--quiet", "--policy", "adaptive", "--workers", "2",
		"--processes", "2", "--dsn", filepath.Join(t.TempDir(), "die.db"), "--json", jsonPath)
	assert.Equal(t, exitFailed, code, errOut)
	assert.Empty(t, out, "no table of partial results")
	assert.Regexp(t, `txnbench: process [12] of 2 failed: signal: killed\n`, errOut)
	// The other process reports, or is interrupted before it could.
	assert.Regexp(t, `txnbench: the run is incomplete \(a process failed; [12] of 2 processes did not report\): no results\n`, errOut)
	assert.Regexp(t, `txnbench: invariant, without the commits of the processes that did not report: ok \(balances sum to 16000000000; \d+ ledger rows, at least the \d+ commits reported; the ledger replays to every balance\)`, errOut)
	assert.NoFileExists(t, jsonPath)
}

// TestProcessesInterrupted interrupts a run of two processes (as Ctrl-C
// does) once both run transfers: the parent interrupts its children,
// which end their slices and report; it prints their results marked
// interrupted, checks the whole invariant on the database and exits with
// status 1, with no child left running. Its children used to be killed,
// and the parent to print "process 1: signal: killed:" and check nothing.
func TestProcessesInterrupted(t *testing.T) {
	t.Setenv(asMainEnv, "1")
	started := t.TempDir()
	t.Setenv(startedDirEnv, started)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	runCtx, interrupt := context.WithCancel(ctx)
	defer interrupt()
	go func() {
		// The children are copies of this test binary: interrupt once
		// both run transfers (and so catch interrupts).
		for runCtx.Err() == nil {
			if entries, _ := os.ReadDir(started); len(entries) == 2 {
				interrupt()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	var out, errOut bytes.Buffer
	code := runWith(runCtx, []string{"--plot", "", "--quiet", "--duration", "1m", "--policy", "adaptive", "--workers", "2",
		"--admission-trace", "20ms", "--processes", "2", "--dsn", filepath.Join(t.TempDir(), "int.db")}, &out, &errOut, openStore)
	assert.Equal(t, exitFailed, code, "%s\n%s", out.String(), errOut.String())
	assert.Contains(t, out.String(), "interrupted: the numbers cover only part of the run")
	assert.Regexp(t, `invariant: ok \(balances sum to 16000000000; \d+ ledger rows = \d+ commits; the ledger replays to every balance\)`, out.String())
	assert.Contains(t, out.String(), "p99 per process of adaptive: ")
	assert.NotContains(t, errOut.String(), "failed")
}

// TestChildReport checks which children's output counts as their report:
// a whole report, even when an interrupt ended the process by the signal
// once it was written (a child that had just reported when its sibling
// failed used to be counted as failed); nothing, or a cut report, is not.
func TestChildReport(t *testing.T) {
	whole, err := json.Marshal(report{Results: []result{{Policy: "adaptive", Commits: 3}}})
	require.NoError(t, err)
	interrupted := exec.Command("sh", "-c", "kill -INT $$").Run()
	var exit *exec.ExitError
	require.ErrorAs(t, interrupted, &exit)
	failed := exec.Command("sh", "-c", "exit 1").Run()
	require.Error(t, failed)

	for _, runErr := range []error{nil, interrupted, failed} {
		rep, ok := childReport(runErr, whole)
		require.True(t, ok, "%v", runErr)
		assert.Equal(t, int64(3), rep.Results[0].Commits)
	}
	for _, out := range [][]byte{nil, whole[:len(whole)/2]} {
		_, ok := childReport(interrupted, out)
		assert.False(t, ok, "%q", out)
	}
	_, ok := childReport(context.Canceled, whole)
	assert.False(t, ok, "a process that did not exit by itself")
}
