package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"time"
)

// setupTimeout bounds connecting, creating the tables and the final check.
const setupTimeout = 2 * time.Minute

// warmupName names the warm-up arm in the report.
const warmupName = "warm-up"

// maxWarmup is the longest unmeasured warm-up (connections, caches) before
// the first measured slice.
const maxWarmup = 500 * time.Millisecond

// storeOpener opens the Store of a configuration; openStore is the real
// one, tests wrap it.
type storeOpener func(ctx context.Context, c *config) (Store, func(), error)

// runBench runs the benchmark c describes on the store open returns and
// returns its report. It returns an error when the database cannot be
// reached or set up; a run that completed with a failed invariant is a
// report, not an error.
func runBench(ctx context.Context, c *config, prog *progress, open storeOpener) (*report, error) {
	// A child of --processes finds the tables its parent set up.
	store, release, seed, err := prepareStore(ctx, c, prog, open, describeTarget(c), !c.shape.child)
	if err != nil {
		return nil, err
	}
	defer release()

	params := policyParams{base: c.base, cap: c.cap, maxAttempts: c.maxAttempts}
	w := c.workload()
	var arms []*arm
	if c.compare && !c.shape.child {
		base := newArm(store, findPolicy(baselinePolicy), params, 1, seed, true)
		if c.shape.hotWorkers > 0 {
			base.description = hotPairBaseline
		}
		arms = append(arms, base)
	}
	for i, name := range c.policies {
		arms = append(arms, newArm(store, findPolicy(name), params, c.workers, seed+uint64(i)+1, false))
	}
	// armWork returns the workload of arm a: the serial baseline's may
	// differ (--hot-workers).
	armWork := func(a *arm) workload {
		if a.baseline {
			return w.baselineWorkload()
		}
		return w
	}
	rounds := 1
	if len(arms) > 1 {
		rounds = c.rounds
	}
	prog.note(fmt.Sprintf("txnbench: running %s for %v each%s", strings.Join(c.policies, ", "), c.duration, roundsNote(c.compare, rounds)))
	if c.cold {
		prog.note("txnbench: --cold: each measured from a fresh Runner, after a warm-up of the database and the pool on a Runner of its own (not measured)")
	} else {
		prog.note("txnbench: each first warms up its own Runner for " + c.warmupLength().String() + " (not measured)")
	}

	// Without --cold every arm first runs a slice of its own, on its own
	// Runner, whose numbers stay out of its results (its adaptive limit
	// leaves slow start there; the first arm's also opens the
	// connections). With --cold the arms are measured from fresh Runners,
	// and only the database and the pool are warmed first, on a Runner of
	// their own, so that every arm finds them alike. Warm-up commits still
	// count for the ledger check.
	var warm result
	var warmups []result
	if c.cold {
		pool := newArm(store, findPolicy(warmupPolicy(c.policies)), params, c.workers, seed^0xabcdef, false)
		pool.name = warmupName
		prog.start(pool, "warm-up    database, pool", c.warmupLength())
		w.slice(ctx, pool, c.warmupLength(), seed^1)
		warm = pool.result()
	} else {
		for i, a := range arms {
			if ctx.Err() != nil {
				break
			}
			warmups = append(warmups, warmUp(ctx, armWork(a), a, c.warmupLength(), seed^(uint64(i)*7919+1), prog))
		}
		warm = sumResults(warmupName, warmups)
	}

	sliceDur := c.duration / time.Duration(rounds)
	started := time.Now()
	for r, order := range schedule(len(arms), rounds) {
		for _, i := range order {
			if ctx.Err() != nil {
				break
			}
			label := arms[i].name
			if rounds > 1 {
				label = fmt.Sprintf("round %d/%d  %s", r+1, rounds, arms[i].name)
			}
			prog.start(arms[i], label, sliceDur)
			armWork(arms[i]).slice(ctx, arms[i], sliceDur, seed+uint64(r)*1000+uint64(i)*7+2)
		}
	}
	prog.done()
	interrupted := ctx.Err() != nil

	checkCtx, cancel2 := context.WithTimeout(context.WithoutCancel(ctx), setupTimeout)
	defer cancel2()
	var tot totals
	if !c.shape.child {
		// A child of --processes leaves the check to its parent.
		var err error
		if tot, err = store.Check(checkCtx); err != nil {
			return nil, fmt.Errorf("%s: check: %w", c.backend, err)
		}
	}

	rep := &report{
		Backend:     c.backend,
		Workers:     c.workers,
		Connections: c.connections(),
		Accounts:    c.accounts,
		Isolation:   c.isolation,
		LockOrder:   c.lockOrder,
		Duration:    c.duration.String(),
		Rounds:      rounds,
		Compare:     c.compare,
		BackoffBase: c.base.String(),
		BackoffCap:  c.cap.String(),
		MaxAttempts: c.maxAttempts,
		Seed:        seed,
		GoVersion:   runtime.Version(),
		Started:     started.UTC().Format(time.RFC3339),
		Interrupted: interrupted,
		Cold:        c.cold,
		HotShare:    c.shape.hotShare,
		HotWorkers:  c.shape.hotWorkers,
		Warmup:      warm,
		Warmups:     warmups,
	}
	if c.timeline > 0 {
		rep.Timeline = c.timeline.String()
	}
	if c.backend == backendSQLite {
		rep.SQLiteBegin = c.sqliteBegin
	}
	commits, unknown := rep.Warmup.Commits, rep.Warmup.CommitUnknown
	for _, a := range arms {
		res := a.result()
		if c.timeline > 0 {
			tl := computeTimeline(a.commitTimes, a.elapsed, c.timeline)
			res.Timeline = &tl
		}
		commits += res.Commits
		unknown += res.CommitUnknown
		if a.baseline {
			rep.Baseline = &res
			continue
		}
		rep.Results = append(rep.Results, res)
	}
	if rep.Baseline != nil && rep.Baseline.CommitsPerSecond > 0 {
		for i := range rep.Results {
			ratio := rep.Results[i].CommitsPerSecond / rep.Baseline.CommitsPerSecond
			rep.Results[i].RatioToBaseline = &ratio
		}
	}
	setClassRatios(rep)
	if c.shape.child {
		rep.Invariant = invariant{OK: true, Problems: []string{"checked by the parent process"}}
		return rep, nil
	}
	rep.Invariant = checkInvariant(tot, int64(c.accounts), commits, unknown)
	return rep, nil
}

// warmUp runs a slice of d of arm a's workers, on a's own Runner, with
// workload w, and returns its numbers, which stay out of a's. The arm's
// Runner keeps what it learnt (its adaptive limit leaves slow start).
func warmUp(ctx context.Context, w workload, a *arm, d time.Duration, seed uint64, prog *progress) result {
	wa := a.warmupArm()
	defer a.endWarmup()
	prog.start(wa, "warm-up    "+a.name, d)
	w.slice(ctx, wa, d, seed)
	return wa.result()
}

// prepareStore picks the run's seed (c.seed, or a random one), opens the
// store with open, announcing target, and with setup creates its tables.
// The returned release closes the store. On an error the progress line is
// ended and nothing is left open.
func prepareStore(ctx context.Context, c *config, prog *progress, open storeOpener, target string, setup bool) (Store, func(), uint64, error) {
	seed := c.seed
	if seed == 0 {
		seed = rand.Uint64() | 1
	}
	setupCtx, cancel := context.WithTimeout(ctx, setupTimeout)
	prog.note(fmt.Sprintf("txnbench: connecting to %s", target))
	store, cleanup, err := open(setupCtx, c)
	if err != nil {
		cancel()
		prog.done()
		return nil, nil, 0, err
	}
	release := func() {
		store.Close()
		cleanup()
		cancel()
	}
	if setup {
		if err := store.Setup(setupCtx, c.accounts); err != nil {
			release()
			prog.done()
			return nil, nil, 0, fmt.Errorf("%s: setup: %w", c.backend, err)
		}
	}
	return store, release, seed, nil
}

// sumResults adds the counts of rs up into one result called name: the
// warm-up of a run, made of its arms' (or processes') warm-ups. Causes
// add up, the first error is the first one's, the elapsed times add up,
// and the rates are over their sum; latencies, which cannot be added,
// are left out.
func sumResults(name string, rs []result) result {
	sum := result{Policy: name, RetryCauses: map[string]int64{}, FailureCauses: map[string]int64{}}
	var elapsed float64
	for _, r := range rs {
		sum.Workers = max(sum.Workers, r.Workers)
		sum.addCounts(r)
		elapsed += r.ElapsedSeconds
	}
	sum.ElapsedSeconds = elapsed
	if elapsed > 0 {
		sum.CommitsPerSecond = float64(sum.Commits) / elapsed
	}
	if sum.Commits > 0 {
		sum.AttemptsPerCommit = float64(sum.Attempts) / float64(sum.Commits)
	}
	return sum
}

// addCounts adds r's counts and causes to s, and takes r's first error if
// s has none; s's cause maps must not be nil.
func (s *result) addCounts(r result) {
	s.Commits += r.Commits
	s.Attempts += r.Attempts
	s.Retries += r.Retries
	s.Failed += r.Failed
	s.CommitUnknown += r.CommitUnknown
	s.Rejected += r.Rejected
	for k, v := range r.RetryCauses {
		s.RetryCauses[k] += v
	}
	for k, v := range r.FailureCauses {
		s.FailureCauses[k] += v
	}
	if s.FirstError == "" {
		s.FirstError = r.FirstError
	}
}

// baselinePolicy is the policy of the one-worker serial baseline of
// --compare; with one worker it never retries.
const baselinePolicy = "adaptive"

// warmupPolicy returns the policy the warm-up runs: the first of policies
// that uses the library, else the library's defaults.
func warmupPolicy(policies []string) string {
	for _, name := range policies {
		if !findPolicy(name).plain {
			return name
		}
	}
	return baselinePolicy
}

// roundsNote describes how the policies are interleaved, for the first
// progress line.
func roundsNote(compare bool, rounds int) string {
	s := ""
	if compare {
		s = ", and a one-worker serial baseline"
	}
	if rounds > 1 {
		s += fmt.Sprintf(", interleaved in %d rounds", rounds)
	}
	return s
}

// describeTarget names the database a run uses, for the first progress
// line.
func describeTarget(c *config) string {
	if c.backend == backendSQLite && c.dsn == "" {
		return "sqlite (a new database in a temporary directory)"
	}
	return c.backend
}

// result turns a's tallies into its line of the report.
func (a *arm) result() result {
	res := result{
		Policy:         a.name,
		Workers:        a.workers,
		Commits:        a.commits.Load(),
		Attempts:       a.obs.attempts.Load(),
		Retries:        a.obs.retries.Load(),
		Failed:         a.failed,
		CommitUnknown:  a.unknown,
		Rejected:       a.rejected,
		ElapsedSeconds: a.elapsed.Seconds(),
		Classes:        a.classResults(),
	}
	res.RetryCauses, res.FailureCauses = a.obs.causeCounts()
	if p := findPolicy(a.name); p != nil && !a.baseline {
		res.Description = p.help
	}
	if a.baseline {
		res.Description = "txn, one worker: nothing conflicts"
	}
	if a.description != "" {
		res.Description = a.description
	}
	if a.elapsed > 0 {
		res.CommitsPerSecond = float64(res.Commits) / a.elapsed.Seconds()
	}
	if res.Commits > 0 {
		res.AttemptsPerCommit = float64(res.Attempts) / float64(res.Commits)
	}
	l := summarize(a.lat)
	res.LatencyMs = latencyMs{P50: ms(l.P50), P90: ms(l.P90), P99: ms(l.P99), Max: ms(l.Max)}
	if a.firstErr != nil {
		res.FirstError = a.firstErr.Error()
	}
	return res
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// checkInvariant compares what the database holds with what the run
// reported: the balances still sum to accounts × initialBalance, the ledger
// has one row per reported commit (plus at most one per transfer whose
// commit outcome was reported unknown), and replaying the ledger gives
// every balance.
func checkInvariant(t totals, accounts, commits, unknown int64) invariant {
	inv := invariant{
		ExpectedSum:      accounts * initialBalance,
		Sum:              t.sum,
		Accounts:         t.accounts,
		LedgerRows:       t.ledgerRows,
		Commits:          commits,
		CommitUnknown:    unknown,
		ReplayMismatches: t.replayMismatches,
		Problems:         []string{},
	}
	var problems []error
	if t.accounts != accounts {
		problems = append(problems, fmt.Errorf("%d accounts, want %d", t.accounts, accounts))
	}
	if t.sum != inv.ExpectedSum {
		problems = append(problems, fmt.Errorf("balances sum to %d, want %d", t.sum, inv.ExpectedSum))
	}
	switch {
	case t.ledgerRows < commits:
		problems = append(problems, fmt.Errorf("%d ledger rows, but %d commits were reported", t.ledgerRows, commits))
	case t.ledgerRows > commits+unknown:
		problems = append(problems, fmt.Errorf("%d ledger rows, but %d commits were reported (and %d outcomes unknown)", t.ledgerRows, commits, unknown))
	}
	if t.replayMismatches != 0 {
		problems = append(problems, fmt.Errorf("%d accounts disagree with the ledger", t.replayMismatches))
	}
	for _, p := range problems {
		inv.Problems = append(inv.Problems, p.Error())
	}
	inv.OK = errors.Join(problems...) == nil
	return inv
}
