package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/fakeclock"
)

// errMemConflict is memStore's lost race, retryable.
var errMemConflict = errors.New("memstore: conflict")

// memStore is an in-memory Store on a fake clock: every attempt of a
// transfer moves the clock forward by one millisecond, so that a slice of
// d runs d/1ms attempts per worker whatever the machine's speed, and the
// first coldFailures attempts of every Runner fail with a retryable
// conflict, as a fresh Runner's first contended attempts do.
type memStore struct {
	clk          *fakeclock.Clock
	coldFailures int64

	mu       sync.Mutex
	balances map[int64]int64
	ledger   []transfer
	// runners holds, per Runner (per call of Bank, in order), the
	// transfers it committed.
	runners []*memLog
}

// memLog is what one Runner of a memStore committed.
type memLog struct {
	transfers []transfer
}

func newMemStore(coldFailures int64) *memStore {
	return &memStore{clk: fakeclock.New(time.Unix(1_700_000_000, 0)), coldFailures: coldFailures}
}

func (s *memStore) open(context.Context, *config) (Store, func(), error) { return s, func() {}, nil }

func (s *memStore) Setup(_ context.Context, accounts int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.balances = map[int64]int64{}
	for id := int64(1); id <= int64(accounts); id++ {
		s.balances[id] = initialBalance
	}
	return nil
}

// memTx is a transaction of memStore: the transfer it will apply.
type memTx struct {
	t   transfer
	set bool
	log *memLog
}

// memBackend is the txn.Backend of memStore.
type memBackend struct{ s *memStore }

func (memBackend) Begin(context.Context, []txn.BeginOption[*memTx]) (*memTx, error) {
	return &memTx{}, nil
}

func (b memBackend) Commit(_ context.Context, tx *memTx) error {
	if tx.set {
		b.s.apply(tx.t, tx.log)
	}
	return nil
}

func (memBackend) Rollback(context.Context, *memTx) error { return nil }

func (memBackend) Classify(err error) txn.Class {
	if errors.Is(err, errMemConflict) {
		return txn.ClassRetryable
	}
	return txn.ClassPermanent
}

// apply commits t, logged in log.
func (s *memStore) apply(t transfer, log *memLog) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.balances[t.from] -= t.amount
	s.balances[t.to] += t.amount
	s.ledger = append(s.ledger, t)
	log.transfers = append(log.transfers, t)
}

func (s *memStore) Bank(opts ...runnerOption) (TransferFunc, func() txn.AdmissionStats) {
	r := txn.New[*memTx](memBackend{s}, opts...)
	log := &memLog{}
	s.mu.Lock()
	s.runners = append(s.runners, log)
	s.mu.Unlock()
	var attempts atomic.Int64
	return func(ctx context.Context, t transfer, callOpts ...callOption) error {
		return r.Run(ctx, func(_ context.Context, tx *memTx) error {
			// A transfer on a database blocks on its round trips, which
			// lets the other workers run; on the fake clock one worker
			// could otherwise use up a whole slice before the Go
			// scheduler starts the others.
			runtime.Gosched()
			s.clk.Advance(time.Millisecond)
			if attempts.Add(1) <= s.coldFailures {
				return errMemConflict
			}
			tx.t, tx.set, tx.log = t, true, log
			return nil
		}, callOpts...)
	}, r.AdmissionStats
}

func (s *memStore) Plain() TransferFunc {
	log := &memLog{}
	return func(_ context.Context, t transfer, _ ...callOption) error {
		runtime.Gosched() // see Bank
		s.clk.Advance(time.Millisecond)
		s.apply(t, log)
		return nil
	}
}

func (s *memStore) Check(context.Context) (totals, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tot := totals{accounts: int64(len(s.balances)), ledgerRows: int64(len(s.ledger))}
	replay := map[int64]int64{}
	for id, b := range s.balances {
		tot.sum += b
		replay[id] = initialBalance
	}
	for _, t := range s.ledger {
		replay[t.from] -= t.amount
		replay[t.to] += t.amount
	}
	for id, b := range s.balances {
		if replay[id] != b {
			tot.replayMismatches++
		}
	}
	return tot, nil
}

func (s *memStore) Code(err error) string {
	if errors.Is(err, errMemConflict) {
		return "conflict"
	}
	return ""
}

func (s *memStore) Close() error { return nil }

// committed returns how many transfers Runner i of s committed.
func (s *memStore) committed(i int) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.runners[i].transfers))
}

// runMem runs the benchmark args describe on s, on s's clock.
func runMem(t *testing.T, s *memStore, args ...string) *report {
	t.Helper()
	c, err := parseFlags(append([]string{"--plot", ""}, args...), io.Discard)
	require.NoError(t, err)
	c.now = s.clk.Now
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := runBench(ctx, &c, newProgress(io.Discard, false), s.open)
	require.NoError(t, err)
	require.True(t, rep.Invariant.OK, "%+v", rep.Invariant)
	return rep
}

// TestWarmupPerArm checks that, by default, every arm (the serial baseline
// included) warms up its own Runner before its measured slices: the cold
// start's conflict stays in the warm-up's numbers, not the arm's, and the
// warm-up's commits count in the ledger check.
func TestWarmupPerArm(t *testing.T) {
	s := newMemStore(1)
	rep := runMem(t, s, "--compare", "--policy", "full,adaptive", "--rounds", "2", "--duration", "200ms",
		"--workers", "4", "--accounts", "8")
	require.Len(t, s.runners, 3, "one Runner per arm, no Runner of a separate warm-up")
	assert.False(t, rep.Cold)

	arms := append([]result{*rep.Baseline}, rep.Results...)
	require.Len(t, rep.Warmups, 3, "one warm-up per arm")
	var warmCommits int64
	for i, res := range arms {
		w := rep.Warmups[i]
		assert.Equal(t, res.Policy, w.Policy, "the warm-ups ran in the order of the arms")
		assert.Positive(t, w.Commits, w.Policy)
		assert.Equal(t, int64(1), w.Retries, "%s: the fresh Runner's conflict falls in its warm-up", w.Policy)
		assert.Equal(t, map[string]int64{"conflict": 1}, w.RetryCauses, w.Policy)
		assert.Zero(t, res.Retries, "%s: the measured slices start on a warm Runner", res.Policy)
		assert.Empty(t, res.RetryCauses, res.Policy)
		assert.Equal(t, s.committed(i), res.Commits+w.Commits,
			"%s: its Runner committed the measured transfers and the warm-up's", res.Policy)
		warmCommits += w.Commits
	}
	assert.Equal(t, warmCommits, rep.Warmup.Commits, "warmup adds up the arms' warm-ups")
	assert.Equal(t, int64(3), rep.Warmup.Retries)

	// One worker at one millisecond per transfer: the baseline's two
	// slices of 100 ms commit exactly 200 transfers, none of the warm-up's.
	assert.Equal(t, int64(200), rep.Baseline.Commits)
	assert.InDelta(t, 0.2, rep.Baseline.ElapsedSeconds, 1e-9)
	assert.InDelta(t, 1000, rep.Baseline.CommitsPerSecond, 1e-6)

	total := rep.Warmup.Commits
	for _, res := range arms {
		total += res.Commits
	}
	assert.Equal(t, total, rep.Invariant.Commits, "the ledger check counts the warm-ups")
	assert.Equal(t, total, rep.Invariant.LedgerRows)
}

// TestCold checks --cold: the arms get no warm-up of their own, so each
// Runner's cold start lands in its measured numbers, and only the pool is
// warmed, on a Runner of its own, whose commits count in the ledger
// check.
func TestCold(t *testing.T) {
	s := newMemStore(1)
	rep := runMem(t, s, "--cold", "--compare", "--policy", "full,adaptive", "--rounds", "2", "--duration", "200ms",
		"--workers", "4", "--accounts", "8")
	assert.True(t, rep.Cold)
	assert.Empty(t, rep.Warmups, "no arm warms up")
	require.Len(t, s.runners, 4, "the arms' Runners, then the pool's warm-up Runner")
	assert.Equal(t, warmupName, rep.Warmup.Policy)
	assert.Positive(t, rep.Warmup.Commits)
	assert.Equal(t, s.committed(3), rep.Warmup.Commits)

	arms := append([]result{*rep.Baseline}, rep.Results...)
	for i, res := range arms {
		assert.Equal(t, int64(1), res.Retries, "%s: measured from a fresh Runner", res.Policy)
		assert.Equal(t, map[string]int64{"conflict": 1}, res.RetryCauses, res.Policy)
		assert.Equal(t, s.committed(i), res.Commits, "%s: everything its Runner committed was measured", res.Policy)
	}
	// The baseline's first transfer took two attempts, two milliseconds.
	assert.Equal(t, int64(199), rep.Baseline.Commits)

	total := rep.Warmup.Commits
	for _, res := range arms {
		total += res.Commits
	}
	assert.Equal(t, total, rep.Invariant.LedgerRows)
}

// TestTimelineOfRun checks that --timeline records the commits of the
// measured slices only, from the start of the first one, and reports
// them in the JSON and the table.
func TestTimelineOfRun(t *testing.T) {
	s := newMemStore(0)
	rep := runMem(t, s, "--policy", "adaptive", "--workers", "1", "--duration", "1s", "--timeline", "100ms")
	assert.Equal(t, "100ms", rep.Timeline)
	require.Len(t, rep.Results, 1)
	res := rep.Results[0]
	require.NotNil(t, res.Timeline)
	tl := res.Timeline
	// Commits at 1, 2, ..., 1000 ms of the measured time; the warm-up's
	// 100 before them are not in it.
	assert.Equal(t, int64(1000), res.Commits)
	assert.Equal(t, []int64{99, 100, 100, 100, 100, 100, 100, 100, 100, 101}, tl.Counts)
	assert.InDelta(t, 100, tl.IntervalMs, 1e-9)
	assert.InDelta(t, 1002, tl.SteadyCommitsPerSecond, 1e-9, "commits at 500 to 1000 ms over half a second")
	require.NotNil(t, tl.TimeToSteadySeconds)
	assert.InDelta(t, 0.5, *tl.TimeToSteadySeconds, 1e-9, "the first window already runs at the steady rate")

	b, err := json.Marshal(rep)
	require.NoError(t, err)
	var m struct {
		Timeline string
		Results  []struct {
			Timeline map[string]any
		}
	}
	require.NoError(t, json.Unmarshal(b, &m))
	assert.Equal(t, "100ms", m.Timeline)
	for _, k := range []string{"interval_ms", "commits_per_interval", "measured_seconds", "steady_from_seconds",
		"steady_commits_per_second", "window_seconds", "time_to_steady_seconds", "window_commits_per_second"} {
		assert.Contains(t, m.Results[0].Timeline, k)
	}

	var out bytes.Buffer
	printTimelines(&out, rep)
	assert.Contains(t, out.String(), "timeline of adaptive, commits per 100ms from the start of its first measured slice:\n  99 100 100 100 100 100 100 100 100 101\n")
	assert.Contains(t, out.String(), "steady 1002/s (its last half, 0.5s to 1.0s); time to steady 0.5s (the first 500ms window at 90% of it or more: 0.0s to 0.5s, 998/s)")
}

// TestComputeTimeline checks the timeline's arithmetic on synthetic
// commit times.
func TestComputeTimeline(t *testing.T) {
	ms := time.Millisecond
	t.Run("ramp", func(t *testing.T) {
		// Nothing for a second, then one commit a millisecond: at 1.001 s
		// to 10 s.
		var commits []time.Duration
		for k := 1; k <= 9000; k++ {
			commits = append(commits, time.Second+time.Duration(k)*ms)
		}
		rand.New(rand.NewPCG(1, 2)).Shuffle(len(commits), func(i, j int) { commits[i], commits[j] = commits[j], commits[i] })
		tl := computeTimeline(commits, 10*time.Second, 100*ms)
		require.Len(t, tl.Counts, 100)
		assert.Equal(t, []int64{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 99, 100}, tl.Counts[:12], "any order of the commit times")
		assert.Equal(t, int64(101), tl.Counts[99], "the commit at the very end counts in the last interval")
		assert.InDelta(t, 5, tl.SteadyFromSeconds, 1e-9)
		assert.InDelta(t, 5001.0/5, tl.SteadyCommitsPerSecond, 1e-9)
		assert.InDelta(t, 0.5, tl.WindowSeconds, 1e-9)
		// 0.9 s to 1.4 s holds 399 commits, 798/s, under 0.9 × 1000.2;
		// 1.0 s to 1.5 s holds 499, 998/s.
		require.NotNil(t, tl.TimeToSteadySeconds)
		assert.InDelta(t, 1.5, *tl.TimeToSteadySeconds, 1e-9)
		assert.InDelta(t, 998, tl.WindowCommitsPerSecond, 1e-9)
	})
	t.Run("window of five intervals", func(t *testing.T) {
		// Half rate for 2 s, then full rate: with 200 ms intervals the
		// window is 5 intervals, 1 s.
		var commits []time.Duration
		for k := 1; k <= 1000; k++ {
			commits = append(commits, time.Duration(k)*2*ms) // 500/s up to 2 s
		}
		for k := 1; k <= 6000; k++ {
			commits = append(commits, 2*time.Second+time.Duration(k)*ms) // 1000/s up to 8 s
		}
		tl := computeTimeline(commits, 8*time.Second, 200*ms)
		assert.InDelta(t, 1, tl.WindowSeconds, 1e-9)
		require.Len(t, tl.Counts, 40)
		assert.Equal(t, int64(99), tl.Counts[0], "2, 4, ..., 198 ms")
		assert.Equal(t, int64(200), tl.Counts[20])
		assert.InDelta(t, 4001.0/4, tl.SteadyCommitsPerSecond, 1e-9)
		// 1.8 s to 2.8 s: 101 + 799 = 900/s < 0.9 × 1000.25; 2.0 s to
		// 3.0 s: 1000/s.
		require.NotNil(t, tl.TimeToSteadySeconds)
		assert.InDelta(t, 3.0, *tl.TimeToSteadySeconds, 1e-9)
	})
	t.Run("never steady", func(t *testing.T) {
		// Commits in the first half only: no steady rate to reach.
		var commits []time.Duration
		for k := 1; k <= 99; k++ {
			commits = append(commits, time.Duration(k)*10*ms) // 100/s up to 0.99 s
		}
		tl := computeTimeline(commits, 2*time.Second, 100*ms)
		assert.Zero(t, tl.SteadyCommitsPerSecond, "nothing in the last half")
		assert.Nil(t, tl.TimeToSteadySeconds)
	})
	t.Run("no window fits", func(t *testing.T) {
		tl := computeTimeline([]time.Duration{10 * ms, 200 * ms, 390 * ms}, 400*ms, 100*ms)
		assert.Positive(t, tl.SteadyCommitsPerSecond)
		assert.Nil(t, tl.TimeToSteadySeconds, "a 500 ms window does not fit in 400 ms")
		assert.Equal(t, []int64{1, 0, 1, 1}, tl.Counts)
	})
	t.Run("empty", func(t *testing.T) {
		tl := computeTimeline(nil, 0, 100*ms)
		assert.Empty(t, tl.Counts)
		assert.Nil(t, tl.TimeToSteadySeconds)
	})
}

// TestHotWorkersClasses checks that the first --hot-workers workers
// transfer on the hot pair only and the others between the other
// accounts only, and which classes an arm reports.
func TestHotWorkersClasses(t *testing.T) {
	w := workload{accounts: 10, hotWorkers: 2, sorted: true}
	rng := rand.New(rand.NewPCG(3, 4))
	for worker := range 4 {
		for range 500 {
			tr := w.nextFor(worker, rng)
			require.NotEqual(t, tr.from, tr.to)
			if worker < 2 {
				assert.True(t, tr.hot)
				assert.ElementsMatch(t, []int64{1, 2}, []int64{tr.from, tr.to})
				continue
			}
			assert.False(t, tr.hot)
			assert.GreaterOrEqual(t, min(tr.from, tr.to), int64(3), "a cold worker touched the hot pair")
			assert.LessOrEqual(t, max(tr.from, tr.to), int64(10))
		}
	}
	assert.True(t, w.classes())
	assert.True(t, w.hasClass(classHot, 4))
	assert.True(t, w.hasClass(classCold, 4))
	b := w.baselineWorkload()
	assert.True(t, b.hasClass(classHot, 1))
	assert.False(t, b.hasClass(classCold, 1), "the baseline's one worker is hot")
	for range 100 {
		assert.True(t, b.nextFor(0, rng).hot)
	}
	assert.False(t, workload{accounts: 10}.classes())
	shared := workload{accounts: 10, hotShare: 0.1}
	assert.True(t, shared.hasClass(classHot, 1) && shared.hasClass(classCold, 1))
	assert.Equal(t, shared, shared.baselineWorkload(), "with --hot-share the baseline runs the same mix")
}

// TestHotWorkersFlags checks the errors of --hot-workers and --timeline.
func TestHotWorkersFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--hot-workers", "2", "--hot-share", "0.1", "--accounts", "10"}, "--hot-workers and --hot-share: give one of them"},
		{[]string{"--hot-workers", "8", "--workers", "8", "--accounts", "10"}, "--hot-workers 8: want at most --workers minus 1 (7), so that at least one worker transfers between the other accounts"},
		{[]string{"--hot-workers", "1", "--workers", "1", "--accounts", "10"}, "--hot-workers 1: want at most --workers minus 1 (0)"},
		{[]string{"--hot-workers", "2", "--accounts", "3"}, "--hot-workers: needs --accounts 4 or more (the hot pair and at least two others)"},
		{[]string{"--hot-workers", "-1"}, "--hot-workers -1: want 0 (none) or more"},
		{[]string{"--timeline", "-1s"}, "--timeline -1s: want a positive interval such as 100ms"},
		{[]string{"--admission-trace", "-1s"}, "--admission-trace -1s: want a positive interval such as 250ms"},
		{[]string{"--timeline", "often"}, `--timeline "often": want a duration with a unit`},
		{[]string{"--timeline", "100ms", "--processes", "2", "--dsn", "x.db"}, "--timeline: not with --processes"},
	}
	for _, c := range cases {
		t.Run(c.want, func(t *testing.T) {
			code, out, errOut := runArgs(t, nil, c.args...)
			assert.Equal(t, exitUsage, code)
			assert.Empty(t, out)
			assert.Contains(t, errOut, "txnbench: "+c.want)
		})
	}
	c, err := parseFlags([]string{"--hot-workers", "7", "--workers", "8", "--accounts", "4"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, 7, c.shape.hotWorkers)
}

// TestHotWorkersRun checks a --compare run with --hot-workers: the serial
// baseline transfers on the hot pair only, the policy's arm reports the
// hot and cold classes, and the hot class's "vs serial" is its goodput
// over the hot pair's serial rate, which the output says.
func TestHotWorkersRun(t *testing.T) {
	s := newMemStore(0)
	rep := runMem(t, s, "--compare", "--policy", "adaptive", "--workers", "4", "--hot-workers", "2",
		"--accounts", "10", "--duration", "100ms")
	assert.Equal(t, 2, rep.HotWorkers)
	require.NotNil(t, rep.Baseline)
	assert.Equal(t, hotPairBaseline, rep.Baseline.Description)
	require.Len(t, s.runners, 2)
	s.mu.Lock()
	base, arm := s.runners[0].transfers, s.runners[1].transfers
	s.mu.Unlock()
	require.NotEmpty(t, base)
	for _, tr := range base {
		assert.ElementsMatch(t, []int64{1, 2}, []int64{tr.from, tr.to}, "the baseline transfers on the hot pair only")
	}
	var hot, cold int
	for _, tr := range arm {
		if tr.hot {
			hot++
		} else {
			cold++
		}
	}
	assert.Positive(t, hot)
	assert.Positive(t, cold)
	assert.Equal(t, []string{classHot}, slices.Sorted(maps.Keys(rep.Baseline.Classes)), "the baseline has a hot class only")

	require.Len(t, rep.Results, 1)
	res := rep.Results[0]
	require.Contains(t, res.Classes, classHot)
	require.Contains(t, res.Classes, classCold)
	h, c := res.Classes[classHot], res.Classes[classCold]
	assert.Equal(t, res.Commits, h.Commits+c.Commits)
	require.NotNil(t, h.RatioToSerial)
	assert.InDelta(t, h.CommitsPerSecond/rep.Baseline.CommitsPerSecond, *h.RatioToSerial, 1e-9)

	var out bytes.Buffer
	printTable(&out, rep)
	printShapes(&out, rep)
	assert.Contains(t, out.String(), "2 of the workers on the hot pair (accounts 1 and 2)")
	assert.Contains(t, out.String(), "serial    "+hotPairBaseline)
	assert.Regexp(t, `adaptive +hot +\d+ +\d+\.\d\dx`, out.String())
	assert.Contains(t, out.String(), "vs serial: over the serial baseline, one worker transferring on the hot pair alone (")
	assert.Contains(t, out.String(), "the hot class's ratio is its goodput over the hot pair's serial rate")
}
