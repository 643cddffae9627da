package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// report is the outcome of a run, printed as a table and written as JSON.
// Its JSON shape is documented in README.md; fields are only ever added.
type report struct {
	Backend     string `json:"backend"`
	Workers     int    `json:"workers"`
	Connections int    `json:"connections"`
	Accounts    int    `json:"accounts"`
	Isolation   string `json:"isolation"`
	LockOrder   string `json:"lock_order"`
	SQLiteBegin string `json:"sqlite_begin,omitempty"`
	Duration    string `json:"duration"`
	Rounds      int    `json:"rounds"`
	Compare     bool   `json:"compare"`
	BackoffBase string `json:"backoff_base"`
	BackoffCap  string `json:"backoff_cap"`
	MaxAttempts int    `json:"max_attempts"`
	Seed        uint64 `json:"seed"`
	GoVersion   string `json:"go_version"`
	Started     string `json:"started"`
	Interrupted bool   `json:"interrupted"`
	Processes   int    `json:"processes,omitempty"`
	// Cold is --cold: the arms were measured from fresh Runners.
	Cold bool `json:"cold"`
	// HotShare and HotWorkers are --hot-share and --hot-workers.
	HotShare   float64 `json:"hot_share,omitempty"`
	HotWorkers int     `json:"hot_workers,omitempty"`
	// Timeline is the interval of --timeline, "" without it.
	Timeline string `json:"timeline,omitempty"`
	// Warmup adds up the unmeasured warm-ups: the arms' own, or with
	// --cold the pool's.
	Warmup result `json:"warmup"`
	// Warmups are the arms' own warm-ups, in the order they ran (none
	// with --cold).
	Warmups   []result  `json:"warmups,omitempty"`
	Baseline  *result   `json:"baseline"`
	Results   []result  `json:"results"`
	Invariant invariant `json:"invariant"`
}

// result is one arm's numbers.
type result struct {
	Policy            string           `json:"policy"`
	Workers           int              `json:"workers"`
	Commits           int64            `json:"commits"`
	Attempts          int64            `json:"attempts"`
	Retries           int64            `json:"retries"`
	Failed            int64            `json:"failed"`
	CommitUnknown     int64            `json:"commit_unknown"`
	Rejected          int64            `json:"rejected"`
	ElapsedSeconds    float64          `json:"elapsed_seconds"`
	CommitsPerSecond  float64          `json:"commits_per_second"`
	AttemptsPerCommit float64          `json:"attempts_per_commit"`
	RatioToBaseline   *float64         `json:"ratio_to_baseline,omitempty"`
	LatencyMs         latencyMs        `json:"latency_ms"`
	RetryCauses       map[string]int64 `json:"retry_causes"`
	FailureCauses     map[string]int64 `json:"failure_causes"`
	Description       string           `json:"description"`
	FirstError        string           `json:"first_error,omitempty"`
	// Classes are the per-class numbers of a mixed workload (--hot-share).
	Classes map[string]classResult `json:"classes,omitempty"`
	// ProcessP99Ms is each process's p99, with --processes.
	ProcessP99Ms []float64 `json:"process_p99_ms,omitempty"`
	// Timeline is the arm's commit timeline, with --timeline.
	Timeline *timeline `json:"timeline,omitempty"`
}

// latencyMs are latency percentiles of committed transfers, in
// milliseconds, from the call of Run to its return (retries and backoff
// included).
type latencyMs struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// invariant is the check made on the database after the run.
type invariant struct {
	OK               bool     `json:"ok"`
	ExpectedSum      int64    `json:"expected_sum"`
	Sum              int64    `json:"sum"`
	Accounts         int64    `json:"accounts"`
	LedgerRows       int64    `json:"ledger_rows"`
	Commits          int64    `json:"commits"`
	CommitUnknown    int64    `json:"commit_unknown"`
	ReplayMismatches int64    `json:"replay_mismatches"`
	Problems         []string `json:"problems"`
}

// printTable writes the human-readable results: what was run, a row per
// arm, what each policy is, why transfers were retried or failed, and the
// invariant.
func printTable(w io.Writer, r *report) {
	fmt.Fprintf(w, "\n%s, %d workers, %d accounts, isolation %s, lock order %s", r.Backend, r.Workers, r.Accounts, r.Isolation, r.LockOrder)
	if r.SQLiteBegin != "" {
		fmt.Fprintf(w, ", BEGIN %s", strings.ToUpper(r.SQLiteBegin))
	}
	switch {
	case r.HotWorkers > 0:
		fmt.Fprintf(w, ", %d of the workers on the hot pair (accounts 1 and 2)", r.HotWorkers)
	case r.HotShare > 0:
		fmt.Fprintf(w, ", %g of the transfers on the hot pair (accounts 1 and 2)", r.HotShare)
	}
	fmt.Fprintf(w, "\n%s per policy", r.Duration)
	if r.Rounds > 1 {
		fmt.Fprintf(w, " in %d interleaved rounds", r.Rounds)
	}
	fmt.Fprintf(w, ", backoff base %s cap %s\n", r.BackoffBase, r.BackoffCap)
	if r.Cold {
		fmt.Fprintln(w, "Cold: every policy measured from a fresh Runner, with no warm-up of its own.")
	} else if len(r.Warmups) > 0 {
		fmt.Fprintln(w, "Each policy first warmed up its own Runner, unmeasured.")
	}
	fmt.Fprintln(w, "Each transfer is one transaction: read two balances, update both, insert a ledger row.")
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "policy\t"
	if r.Compare {
		head += "workers\t"
	}
	head += "commits/s\t"
	if r.Compare {
		head += "vs serial\t"
	}
	head += "attempts/commit\tp50\tp99\tfailed\t"
	fmt.Fprintln(tw, head)
	rows := r.Results
	if r.Baseline != nil {
		rows = append([]result{*r.Baseline}, rows...)
	}
	for _, res := range rows {
		line := res.Policy + "\t"
		if r.Compare {
			line += fmt.Sprintf("%d\t", res.Workers)
		}
		line += fmt.Sprintf("%.0f\t", res.CommitsPerSecond)
		if r.Compare {
			if res.RatioToBaseline != nil {
				line += fmt.Sprintf("%.2fx\t", *res.RatioToBaseline)
			} else {
				line += "1.00x\t"
			}
		}
		line += fmt.Sprintf("%.2f\t%s\t%s\t%d\t", res.AttemptsPerCommit, fmtMs(res.LatencyMs.P50), fmtMs(res.LatencyMs.P99), res.Failed)
		fmt.Fprintln(tw, line)
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, res := range rows {
		if res.Description != "" {
			fmt.Fprintf(tw, "  %s\t%s\n", res.Policy, res.Description)
		}
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	for _, res := range rows {
		if len(res.FailureCauses) > 0 {
			fmt.Fprintf(w, "failures of %s: %s", res.Policy, formatCauses(res.FailureCauses))
			if total := res.Commits + res.Failed; total > 0 {
				fmt.Fprintf(w, " (%d of %d transfers, %.0f%%, lost)", res.Failed, total, 100*float64(res.Failed)/float64(total))
			}
			fmt.Fprintln(w)
		}
		if len(res.RetryCauses) > 0 {
			fmt.Fprintf(w, "retries of %s: %s\n", res.Policy, formatCauses(res.RetryCauses))
		}
		if res.FirstError != "" {
			fmt.Fprintf(w, "first failure of %s: %s\n", res.Policy, res.FirstError)
		}
	}
	// The arms' own warm-ups: plain's failures there are expected, the
	// library's are not.
	for _, wr := range r.Warmups {
		if wr.FirstError != "" && wr.Policy != plainName {
			fmt.Fprintf(w, "first failure of the warm-up of %s: %s\n", wr.Policy, wr.FirstError)
		}
	}
	if len(r.Warmups) == 0 && r.Warmup.FirstError != "" {
		fmt.Fprintf(w, "first failure of the warm-up: %s\n", r.Warmup.FirstError)
	}
	inv := r.Invariant
	switch {
	case inv.OK && inv.CommitUnknown == 0:
		fmt.Fprintf(w, "invariant: ok (balances sum to %d; %d ledger rows = %d commits; the ledger replays to every balance)\n",
			inv.Sum, inv.LedgerRows, inv.Commits)
	case inv.OK:
		fmt.Fprintf(w, "invariant: ok (balances sum to %d; %d ledger rows = %d commits + %d of %d transfers whose commit outcome was unknown; the ledger replays to every balance)\n",
			inv.Sum, inv.LedgerRows, inv.Commits, inv.LedgerRows-inv.Commits, inv.CommitUnknown)
	default:
		fmt.Fprintf(w, "invariant: FAILED: %s\n", strings.Join(inv.Problems, "; "))
	}
	if r.Interrupted {
		fmt.Fprintln(w, "interrupted: the numbers cover only part of the run")
	}
}

// formatCauses lists retry causes, most frequent first.
func formatCauses(m map[string]int64) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool {
		if m[names[i]] != m[names[j]] {
			return m[names[i]] > m[names[j]]
		}
		return names[i] < names[j]
	})
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s ×%d", n, m[n])
	}
	return strings.Join(parts, ", ")
}

// fmtMs formats milliseconds with three significant digits and a unit.
func fmtMs(v float64) string {
	d := time.Duration(v * float64(time.Millisecond))
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", v)
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%.1fms", v)
	case d < 10*time.Second:
		return fmt.Sprintf("%.0fms", v)
	}
	return fmt.Sprintf("%.1fs", v/1000)
}

// writeJSON writes r as indented JSON to path, or to stdout for "-".
func writeJSON(path string, stdout io.Writer, r *report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	b = append(b, '\n')
	if path == "-" {
		_, err := stdout.Write(b)
		return err
	}
	return writeFileAtomic(path, b)
}

// writeFileAtomic writes b to a temporary file beside path and renames it
// over path, so that a reader never sees half a file. Its errors name
// path.
func writeFileAtomic(path string, b []byte) error {
	if err := writeFileAtomicRaw(path, b); err != nil {
		// The error names the temporary file; keep only its cause.
		if u := errors.Unwrap(err); u != nil {
			err = u
		}
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func writeFileAtomicRaw(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, werr := f.Write(b)
	cerr := f.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(f.Name(), 0o644)
	}
	if werr == nil {
		werr = os.Rename(f.Name(), path)
	}
	if werr != nil {
		_ = os.Remove(f.Name())
		return werr
	}
	return nil
}

// progress shows what the run is doing. On a terminal it redraws one line
// in place five times a second. Otherwise it prints a line when a slice
// ends, once a second during slices of two seconds or more, and once a
// second while a slice waits for its last transfers to finish. Once a
// slice's measured time has ended the line says so, with the number of
// transfers still under way, instead of a clock stopped at its end.
type progress struct {
	w        io.Writer
	terminal bool
	// now reads the clock (time.Now; a fixed one in tests).
	now func() time.Time

	mu                       sync.Mutex
	arm                      *arm
	label                    string
	fromCommits, fromAttempt int64
	fromFailed               int64
	started                  time.Time
	length                   time.Duration
	stop                     chan struct{}
	stopped                  chan struct{}
	drawn                    bool
}

// newProgress returns a progress writing to w.
func newProgress(w io.Writer, terminal bool) *progress {
	return &progress{w: w, terminal: terminal, now: time.Now}
}

// note prints a one-off message.
func (p *progress) note(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
	fmt.Fprintln(p.w, msg)
}

// start announces a slice of arm a lasting d, and starts the ticker on the
// first call.
func (p *progress) start(a *arm, label string, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.finishLocked()
	p.arm, p.label, p.started, p.length = a, label, p.now(), d
	p.fromCommits, p.fromAttempt, p.fromFailed = a.commits.Load(), a.obs.attempts.Load(), a.obs.gaveUp.Load()
	if p.stop == nil {
		p.stop, p.stopped = make(chan struct{}), make(chan struct{})
		every := time.Second
		if p.terminal {
			every = 200 * time.Millisecond
		}
		go tick(every, p.stop, p.stopped, func(time.Time) { p.draw() })
	}
}

// tick calls f every interval until stop is closed, then closes stopped.
func tick(every time.Duration, stop <-chan struct{}, stopped chan<- struct{}, f func(now time.Time)) {
	defer close(stopped)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			f(now)
		}
	}
}

// draw prints or redraws the line of the slice under way.
func (p *progress) draw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.arm == nil {
		return
	}
	// In a log, a short slice gets its final line only, and a drain a
	// line once it has lasted half a second.
	drain := p.now().Sub(p.started) - p.length
	if !p.terminal && (drain <= 0 && p.length < 2*time.Second || drain > 0 && drain < 500*time.Millisecond) {
		return
	}
	p.writeLocked(p.lineLocked(false))
}

// finishLocked prints the final line of the slice that just ended, when
// not on a terminal, so that a log shows every slice.
func (p *progress) finishLocked() {
	if p.arm != nil && !p.terminal {
		p.writeLocked(p.lineLocked(true))
	}
	p.arm = nil
}

// lineLocked returns the progress line of the slice under way; final is
// for the line printed once the slice has ended.
func (p *progress) lineLocked(final bool) string {
	a := p.arm
	el := p.now().Sub(p.started)
	n := a.commits.Load() - p.fromCommits
	apc := 0.0
	if n > 0 {
		apc = float64(a.obs.attempts.Load()-p.fromAttempt) / float64(n)
	}
	counts := fmt.Sprintf("%8d commits %7.0f/s  %.2f attempts/commit  %d failed",
		n, float64(n)/el.Seconds(), apc, a.obs.gaveUp.Load()-p.fromFailed)
	head := fmt.Sprintf("txnbench  %-26s", p.label)
	drain := el - p.length
	switch {
	case final && drain >= 50*time.Millisecond:
		return fmt.Sprintf("%s %5.1fs, then %.1fs draining %s", head, p.length.Seconds(), drain.Seconds(), counts)
	case final:
		return fmt.Sprintf("%s %5.1fs %s", head, el.Seconds(), counts)
	case drain > 0:
		return fmt.Sprintf("%s %5.1fs ended %.1fs ago, draining %s still under way  %s",
			head, p.length.Seconds(), drain.Seconds(), plural(a.inFlight.Load(), "transfer"), counts)
	}
	return fmt.Sprintf("%s %5.1fs/%.1fs %s", head, el.Seconds(), p.length.Seconds(), counts)
}

// plural returns n and noun, with an s unless n is 1.
func plural(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// writeLocked prints line, in place on a terminal.
func (p *progress) writeLocked(line string) {
	if p.terminal {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.drawn = true
		return
	}
	fmt.Fprintln(p.w, line)
}

func (p *progress) clearLocked() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
}

// done stops the ticker and clears the line.
func (p *progress) done() {
	p.mu.Lock()
	stop, stopped := p.stop, p.stopped
	p.stop = nil
	p.mu.Unlock()
	if stop != nil {
		close(stop)
		<-stopped
	}
	p.mu.Lock()
	p.finishLocked()
	p.clearLocked()
	p.mu.Unlock()
}
