package main

import (
	"io"
	"math/rand/v2"
	"testing"

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
