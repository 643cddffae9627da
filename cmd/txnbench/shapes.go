package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/txnkit/txn"
)

// The shapes in which services run the library, beyond one process with a
// connection per worker: a mixed workload where a share of the transfers
// (--hot-share) or a number of dedicated workers (--hot-workers) hits one
// hot pair of accounts, and several processes on the same tables
// (--processes). --conns below --workers is in config.go.

// shapeConfig is what the shape flags set.
type shapeConfig struct {
	hotShare   float64
	hotWorkers int
	processes  int
	child      bool
	// args are the command line's arguments, passed on to the children.
	args []string
}

// register adds the shape flags to fs, and returns the checks of the
// values that do not parse, as typedVar does.
func (s *shapeConfig) register(fs *flag.FlagSet) []func() error {
	hotShare := typedVar(fs, &s.hotShare, "hot-share", 0, "share of the transfers (0 to 1) made between accounts 1 and 2, the hot pair;\nthe others are between accounts 3 to --accounts, and p50/p99 are reported per class",
		func(v string) (float64, error) { return strconv.ParseFloat(v, 64) },
		func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }, "a number from 0 to 1, such as 0.1")
	hotWorkers := typedVar(fs, &s.hotWorkers, "hot-workers", 0, "`N` of the --workers transfer only between accounts 1 and 2, the hot pair (random direction;\n--lock-order still decides which row is locked first), the others only between accounts 3 to --accounts;\ngoodput, p50 and p99 are reported per class, and with --compare the serial baseline is one worker\non the hot pair alone, so that the hot class's \"vs serial\" is a ratio to the hot pair's serial rate",
		strconv.Atoi, strconv.Itoa, "a whole number")
	processes := typedVar(fs, &s.processes, "processes", 1, "run the workers in this many txnbench processes on the same tables (each with --workers\nworkers, --conns connections and its own Runner), add up their results and check the invariant once",
		strconv.Atoi, strconv.Itoa, "a whole number")
	fs.BoolVar(&s.child, "child", false, "internal: run as one of the processes of --processes (no setup, no baseline, no check, JSON on stdout)")
	return []func() error{hotShare, hotWorkers, processes}
}

// check validates the shape flags.
func (s *shapeConfig) check(c *config, bad func(format string, args ...any)) {
	if !(s.hotShare >= 0 && s.hotShare <= 1) {
		bad("--hot-share %v: want a share between 0 and 1", s.hotShare)
	} else if s.hotShare > 0 && c.accounts < 4 {
		bad("--hot-share: needs --accounts 4 or more (the hot pair and at least two others)")
	}
	switch {
	case s.hotWorkers < 0:
		bad("--hot-workers %d: want 0 (none) or more", s.hotWorkers)
	case s.hotWorkers == 0:
	case s.hotShare > 0:
		bad("--hot-workers and --hot-share: give one of them (dedicated hot workers, or a share of every worker's transfers on the hot pair)")
	default:
		if s.hotWorkers > c.workers-1 {
			bad("--hot-workers %d: want at most --workers minus 1 (%d), so that at least one worker transfers between the other accounts", s.hotWorkers, max(c.workers-1, 0))
		}
		if c.accounts < 4 {
			bad("--hot-workers: needs --accounts 4 or more (the hot pair and at least two others)")
		}
	}
	switch {
	case s.processes < 1:
		bad("--processes %d: want at least 1", s.processes)
	case s.processes > maxProcesses:
		bad("--processes %d: want at most %d", s.processes, maxProcesses)
	}
	if s.processes > 1 && c.backend == backendSQLite && c.dsn == "" {
		bad("--processes: SQLite needs --dsn naming a file all processes share")
	}
}

// Classes of a mixed workload's transfers.
const (
	classHot  = "hot"
	classCold = "cold"
)

// nextShaped returns a transfer of a mixed workload: between the hot pair
// with probability hotShare, else between two cold accounts.
func (w workload) nextShaped(rng *rand.Rand) transfer {
	if rng.Float64() < w.hotShare {
		return w.hotTransfer(rng)
	}
	return w.coldTransfer(rng)
}

// nextFor returns the next transfer of an arm's worker number worker
// (counted from 0): with --hot-workers, a worker below hotWorkers
// transfers on the hot pair and the others between cold accounts;
// otherwise any worker takes the next transfer of the workload.
func (w workload) nextFor(worker int, rng *rand.Rand) transfer {
	if w.hotWorkers > 0 {
		if worker < w.hotWorkers {
			return w.hotTransfer(rng)
		}
		return w.coldTransfer(rng)
	}
	return w.next(rng)
}

// hotTransfer returns a transfer between the hot pair, accounts 1 and 2,
// in either direction.
func (w workload) hotTransfer(rng *rand.Rand) transfer {
	amount := rng.Int64N(100) + 1
	from, to := int64(1), int64(2)
	if rng.IntN(2) == 0 {
		from, to = to, from
	}
	return transfer{from: from, to: to, amount: amount, sorted: w.sorted, hot: true}
}

// coldTransfer returns a transfer between two distinct accounts of
// 3..accounts.
func (w workload) coldTransfer(rng *rand.Rand) transfer {
	amount := rng.Int64N(100) + 1
	n := int64(w.accounts - 2)
	from := rng.Int64N(n) + 3
	to := rng.Int64N(n-1) + 3
	if to >= from {
		to++
	}
	return transfer{from: from, to: to, amount: amount, sorted: w.sorted}
}

// classes reports whether the workload's transfers fall into the hot and
// cold classes, reported apart.
func (w workload) classes() bool { return w.hotShare > 0 || w.hotWorkers > 0 }

// hasClass reports whether an arm of workers workers makes transfers of
// class name: both classes with --hot-share; with --hot-workers, hot if
// any worker is hot and cold if any is not.
func (w workload) hasClass(name string, workers int) bool {
	switch {
	case w.hotShare > 0:
		return true
	case w.hotWorkers == 0:
		return false
	case name == classHot:
		return true
	}
	return workers > w.hotWorkers
}

// baselineWorkload returns the workload of the one-worker serial baseline:
// with --hot-workers its worker transfers on the hot pair alone, so that
// its goodput is the hot pair's serial rate; otherwise the workload
// itself.
func (w workload) baselineWorkload() workload {
	if w.hotWorkers > 0 {
		w.hotWorkers = 1
	}
	return w
}

// hotPairBaseline describes the serial baseline of --hot-workers.
const hotPairBaseline = "txn, one worker on the hot pair alone (accounts 1 and 2): nothing conflicts; the hot pair's serial rate"

// classResult is one class's numbers in a mixed workload.
type classResult struct {
	Commits          int64   `json:"commits"`
	CommitsPerSecond float64 `json:"commits_per_second"`
	// RatioToSerial is the class's goodput over the serial baseline's: for
	// the hot class, its goodput as a share of what one worker alone
	// commits, an estimate of the hot pair's serial rate.
	RatioToSerial *float64 `json:"ratio_to_serial,omitempty"`
	P50Ms         float64  `json:"p50_ms"`
	P99Ms         float64  `json:"p99_ms"`
	// ProcessP99Ms is the p99 of each process, with --processes.
	ProcessP99Ms []float64 `json:"process_p99_ms,omitempty"`
}

// classResults returns the per-class numbers of a, or nil when the
// workload has no classes.
func (a *arm) classResults() map[string]classResult {
	if len(a.classLat) == 0 {
		return nil
	}
	out := map[string]classResult{}
	for name, lat := range a.classLat {
		l := summarize(lat)
		cr := classResult{Commits: int64(len(lat)), P50Ms: ms(l.P50), P99Ms: ms(l.P99)}
		if a.elapsed > 0 {
			cr.CommitsPerSecond = float64(cr.Commits) / a.elapsed.Seconds()
		}
		out[name] = cr
	}
	return out
}

// setClassRatios sets each class's ratio to the serial baseline.
func setClassRatios(rep *report) {
	if rep.Baseline == nil || rep.Baseline.CommitsPerSecond <= 0 {
		return
	}
	for i := range rep.Results {
		for name, cr := range rep.Results[i].Classes {
			ratio := cr.CommitsPerSecond / rep.Baseline.CommitsPerSecond
			cr.RatioToSerial = &ratio
			rep.Results[i].Classes[name] = cr
		}
	}
}

// printShapes writes the per-class and per-process lines of rep, if any,
// and what their "vs serial" is a ratio to.
func printShapes(w io.Writer, rep *report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	any := false
	for _, res := range rep.Results {
		for _, name := range []string{classHot, classCold} {
			cr, ok := res.Classes[name]
			if !ok {
				continue
			}
			if !any {
				fmt.Fprintln(tw, "policy\tclass\tcommits/s\tvs serial\tp50\tp99\t")
				any = true
			}
			ratio := "-"
			if cr.RatioToSerial != nil {
				ratio = fmt.Sprintf("%.2fx", *cr.RatioToSerial)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%s\t\n", res.Policy, name, cr.CommitsPerSecond, ratio, fmtMs(cr.P50Ms), fmtMs(cr.P99Ms))
		}
	}
	_ = tw.Flush()
	if any && rep.Baseline != nil {
		switch {
		case rep.HotWorkers > 0:
			fmt.Fprintf(w, "vs serial: over the serial baseline, one worker transferring on the hot pair alone (%.0f commits/s):\n"+
				"the hot class's ratio is its goodput over the hot pair's serial rate\n", rep.Baseline.CommitsPerSecond)
		default:
			fmt.Fprintf(w, "vs serial: over the serial baseline, one worker running the same mix of hot and cold transfers (%.0f commits/s)\n",
				rep.Baseline.CommitsPerSecond)
		}
	}
	if any {
		fmt.Fprintln(w)
	}
	for _, res := range rep.Results {
		if len(res.ProcessP99Ms) > 0 {
			ps := make([]string, len(res.ProcessP99Ms))
			for i, p := range res.ProcessP99Ms {
				ps[i] = fmtMs(p)
			}
			fmt.Fprintf(w, "p99 per process of %s: %s\n", res.Policy, strings.Join(ps, ", "))
		}
	}
}

// childArgs returns the arguments of a child process: the parent's,
// without the flags the parent handles itself, and with the child's.
func childArgs(args []string, seed uint64) []string {
	var out []string
	skipNext := false
	for _, a := range args {
		if skipNext {
			skipNext = false
			continue
		}
		name := strings.TrimLeft(a, "-")
		base, _, hasValue := strings.Cut(name, "=")
		switch base {
		case "processes", "json", "plot", "seed", "quiet", "child":
			if !hasValue && base != "quiet" && base != "child" {
				skipNext = true
			}
			continue
		}
		out = append(out, a)
	}
	return append(out, "--child", "--quiet", "--json", "-", "--plot=", fmt.Sprintf("--seed=%d", seed))
}

// runProcesses runs the benchmark in c.processes child processes of this
// executable on the same tables: it sets the tables up, runs the serial
// baseline alone (with --compare), starts the children together, adds up
// their results per policy, and checks the invariant once, on everything
// all processes committed.
func runProcesses(ctx context.Context, c *config, prog *progress, open storeOpener) (*report, error) {
	store, release, seed, err := prepareStore(ctx, c, prog, open, c.backend, true)
	if err != nil {
		return nil, err
	}
	defer release()
	w := c.workload()
	params := policyParams{base: c.base, cap: c.cap, maxAttempts: c.maxAttempts}
	var base *arm
	var baseWarm *result
	if c.compare {
		base = newArm(store, findPolicy(baselinePolicy), params, 1, seed, true)
		if c.shape.hotWorkers > 0 {
			base.description = hotPairBaseline
		}
		bw := w.baselineWorkload()
		var r result
		if c.cold {
			// The baseline is measured from a fresh Runner; only the
			// database and the pool are warmed, on a Runner of their own.
			pool := newArm(store, findPolicy(baselinePolicy), params, 1, seed^0xabcdef, false)
			pool.name = warmupName
			prog.start(pool, "warm-up    database, pool", c.warmupLength())
			bw.slice(ctx, pool, c.warmupLength(), seed^5)
			r = pool.result()
		} else {
			r = warmUp(ctx, bw, base, c.warmupLength(), seed^5, prog)
		}
		baseWarm = &r
		prog.start(base, "serial baseline", c.duration)
		bw.slice(ctx, base, c.duration, seed^3)
	}
	exe, err := os.Executable()
	if err != nil {
		prog.done()
		return nil, fmt.Errorf("--processes: %w", err)
	}
	// The baseline's line ends before the children start.
	prog.done()
	reps := make([]*report, c.shape.processes)
	errs := make([]error, c.shape.processes)
	traces := make([][]string, c.shape.processes)
	// The children stop when the run is interrupted or one of them fails:
	// each is sent an interrupt, on which it ends its slice, lets its
	// transfers under way finish and reports, as txnbench does; one still
	// running childWait later is killed.
	childCtx, stopChildren := context.WithCancel(ctx)
	defer stopChildren()
	if ctx.Err() == nil {
		prog.note(fmt.Sprintf("txnbench: %d processes running", c.shape.processes))
		var wg sync.WaitGroup
		for i := range reps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var out, stderr bytes.Buffer
				cmd := exec.CommandContext(childCtx, exe, childArgs(c.shape.args, seed+uint64(i)*7919+11)...)
				cmd.Stdout, cmd.Stderr = &out, &stderr
				cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
				cmd.WaitDelay = c.txnTimeout + childWait
				err := cmd.Run()
				trace, rest := splitTrace(stderr.Bytes())
				traces[i] = trace
				if rep, ok := childReport(err, out.Bytes()); ok {
					reps[i] = rep
					return
				}
				errs[i] = childError(i+1, c.shape.processes, err, out.Bytes(), rest)
				stopChildren()
			}()
		}
		wg.Wait()
		prog.done()
	}
	if c.traceOut != nil {
		for _, line := range mergeTraces(traces) {
			fmt.Fprintln(c.traceOut, line)
		}
	}
	interrupted := ctx.Err() != nil
	if failed := errors.Join(errs...); failed != nil || interrupted && slices.Contains(reps, nil) {
		// Some processes' transfers are in the database but not in any
		// report: no results, but the balances are still checked.
		return nil, incompleteRun(ctx, c, store, failed, interrupted, reps, baseWarm, base)
	}
	rep := mergeReports(reps)
	rep.Interrupted = rep.Interrupted || interrupted
	rep.Backend, rep.Workers, rep.Connections, rep.Accounts = c.backend, c.workers*c.shape.processes, c.connections()*c.shape.processes, c.accounts
	rep.Isolation, rep.LockOrder, rep.Duration, rep.Compare = c.isolation, c.lockOrder, c.duration.String(), c.compare
	rep.BackoffBase, rep.BackoffCap, rep.MaxAttempts, rep.Seed = c.base.String(), c.cap.String(), c.maxAttempts, seed
	rep.Processes = c.shape.processes
	rep.HotShare, rep.HotWorkers, rep.Cold = c.shape.hotShare, c.shape.hotWorkers*c.shape.processes, c.cold
	if baseWarm != nil {
		if !c.cold {
			rep.Warmups = append([]result{*baseWarm}, rep.Warmups...)
		}
		rep.Warmup = sumResults(warmupName, []result{rep.Warmup, *baseWarm})
	}
	commits, unknown := rep.Warmup.Commits, rep.Warmup.CommitUnknown
	for _, r := range rep.Results {
		commits += r.Commits
		unknown += r.CommitUnknown
	}
	if base != nil {
		b := base.result()
		rep.Baseline = &b
		commits += b.Commits
		unknown += b.CommitUnknown
		for i := range rep.Results {
			ratio := rep.Results[i].CommitsPerSecond / b.CommitsPerSecond
			rep.Results[i].RatioToBaseline = &ratio
		}
		setClassRatios(rep)
	}
	checkCtx, cancel2 := context.WithTimeout(context.WithoutCancel(ctx), setupTimeout)
	defer cancel2()
	tot, err := store.Check(checkCtx)
	if err != nil {
		return nil, fmt.Errorf("%s: check: %w", c.backend, err)
	}
	rep.Invariant = checkInvariant(tot, int64(c.accounts), commits, unknown)
	return rep, nil
}

// childWait is how long a child of --processes has, beyond --txn-timeout
// (its transfers under way), to report and exit once it was interrupted.
const childWait = 10 * time.Second

// childReport returns the report a child wrote, if it wrote one: a child
// writes its report last, whole, once its transfers ended, so a report
// that parses is complete, whatever the exit status that follows it
// (1 when it was interrupted; an interrupt that arrives as it exits ends
// it by the signal).
func childReport(runErr error, out []byte) (*report, bool) {
	var rep report
	if len(out) == 0 || json.Unmarshal(out, &rep) != nil {
		return nil, false
	}
	var exit *exec.ExitError
	if runErr != nil && !errors.As(runErr, &exit) {
		// It did not exit by itself (killed after childWait).
		return nil, false
	}
	return &rep, true
}

// childError describes how child number i of n failed: its exit, and its
// last lines of standard error.
func childError(i, n int, runErr error, out []byte, stderr string) error {
	var lines []string
	switch {
	case errors.Is(runErr, context.Canceled):
		// exec.Cmd.Start refused to start it: the run was stopped first.
		return fmt.Errorf("process %d of %d was not started: the run was stopped", i, n)
	case runErr != nil:
		lines = append(lines, fmt.Sprintf("process %d of %d failed: %v", i, n, runErr))
	default:
		lines = append(lines, fmt.Sprintf("process %d of %d exited without a report it could read (%d bytes on its standard output)", i, n, len(out)))
	}
	said := strings.Split(strings.TrimSpace(stderr), "\n")
	for _, l := range said[max(0, len(said)-5):] {
		if l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "txnbench: ")); l != "" {
			lines = append(lines, fmt.Sprintf("process %d said: %s", i, l))
		}
	}
	return errors.New(strings.Join(lines, "\n"))
}

// incompleteRun checks the balances of a run of --processes some of whose
// processes failed or were interrupted before they reported, and returns
// the error that says so: the processes' failures, that no results are
// reported, and the invariant as far as it can be checked without the
// missing processes' commits (every balance and the ledger's replay; at
// least as many ledger rows as the commits reported).
func incompleteRun(ctx context.Context, c *config, store Store, failed error, interrupted bool, reps []*report, warm *result, base *arm) error {
	var lines []string
	if failed != nil {
		lines = append(lines, failed.Error())
	}
	missing := 0
	for _, r := range reps {
		if r == nil {
			missing++
		}
	}
	why := "a process failed"
	if interrupted {
		why = "interrupted"
	}
	lines = append(lines, fmt.Sprintf("the run is incomplete (%s; %d of %d processes did not report): no results", why, missing, len(reps)))
	var commits int64
	if warm != nil {
		commits += warm.Commits
	}
	if base != nil {
		commits += base.commits.Load()
	}
	for _, r := range reps {
		if r == nil {
			continue
		}
		commits += r.Warmup.Commits
		for _, res := range r.Results {
			commits += res.Commits
		}
	}
	checkCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), setupTimeout)
	defer cancel()
	tot, err := store.Check(checkCtx)
	if err != nil {
		lines = append(lines, fmt.Sprintf("invariant: not checked: %s: check: %v", c.backend, err))
		return errors.New(strings.Join(lines, "\n"))
	}
	inv := checkInvariant(tot, int64(c.accounts), commits, tot.ledgerRows)
	if inv.OK {
		lines = append(lines, fmt.Sprintf("invariant, without the commits of the processes that did not report: ok (balances sum to %d; %d ledger rows, at least the %d commits reported; the ledger replays to every balance)",
			inv.Sum, inv.LedgerRows, commits))
	} else {
		lines = append(lines, "invariant, without the commits of the processes that did not report: FAILED: "+strings.Join(inv.Problems, "; "))
	}
	return errors.New(strings.Join(lines, "\n"))
}

// mergeReports adds up the children's reports: per policy, counts add up,
// goodput adds up (the processes ran side by side), the elapsed time is
// the longest, and latency percentiles, which cannot be added, are the
// worst process's, with every process's p99 listed.
func mergeReports(reps []*report) *report {
	out := &report{Rounds: reps[0].Rounds, GoVersion: reps[0].GoVersion, Started: reps[0].Started}
	warmups := make([]result, 0, len(reps))
	index := map[string]int{}
	for _, r := range reps {
		out.Interrupted = out.Interrupted || r.Interrupted
		warmups = append(warmups, r.Warmup)
		for _, res := range r.Results {
			i, ok := index[res.Policy]
			if !ok {
				i = len(out.Results)
				index[res.Policy] = i
				out.Results = append(out.Results, result{Policy: res.Policy, RetryCauses: map[string]int64{}, FailureCauses: map[string]int64{}})
			}
			m := &out.Results[i]
			m.Workers += res.Workers
			m.addCounts(res)
			m.ElapsedSeconds = max(m.ElapsedSeconds, res.ElapsedSeconds)
			m.CommitsPerSecond += res.CommitsPerSecond
			m.LatencyMs.P50 = max(m.LatencyMs.P50, res.LatencyMs.P50)
			m.LatencyMs.P90 = max(m.LatencyMs.P90, res.LatencyMs.P90)
			m.LatencyMs.P99 = max(m.LatencyMs.P99, res.LatencyMs.P99)
			m.LatencyMs.Max = max(m.LatencyMs.Max, res.LatencyMs.Max)
			m.ProcessP99Ms = append(m.ProcessP99Ms, res.LatencyMs.P99)
			m.Description = res.Description
			for name, cr := range res.Classes {
				if m.Classes == nil {
					m.Classes = map[string]classResult{}
				}
				mc := m.Classes[name]
				mc.Commits += cr.Commits
				mc.CommitsPerSecond += cr.CommitsPerSecond
				mc.P50Ms = max(mc.P50Ms, cr.P50Ms)
				mc.P99Ms = max(mc.P99Ms, cr.P99Ms)
				mc.ProcessP99Ms = append(mc.ProcessP99Ms, cr.P99Ms)
				m.Classes[name] = mc
			}
		}
	}
	out.Warmup = sumResults(warmupName, warmups)
	for i := range out.Results {
		m := &out.Results[i]
		if m.Commits > 0 {
			m.AttemptsPerCommit = float64(m.Attempts) / float64(m.Commits)
		}
		slices.Sort(m.ProcessP99Ms)
	}
	return out
}

// dbKeyed is the policy that holds the transfer's accounts as conflict
// keys in the database (txn.DatabaseKeys), beside the default controller.
func dbKeyedPolicy() policy {
	return policy{
		name: "dbkeyed",
		help: "txn with its defaults plus conflict keys naming the two accounts, held in the database (txn.DatabaseKeys: advisory or named locks; postgres and mysql only)",
		runner: func(p policyParams) []txn.RunnerOption {
			return []txn.RunnerOption{txn.WithBackoff(txn.FullJitter(p.base, p.cap)), txn.MaxAttempts(p.maxAttempts), txn.Adaptive(0), txn.DatabaseKeys()}
		},
		perCall:      accountKeys,
		optIn:        true,
		databaseKeys: true,
	}
}
