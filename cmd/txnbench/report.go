package main

import (
	"encoding/json"
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
	Backend     string    `json:"backend"`
	Workers     int       `json:"workers"`
	Connections int       `json:"connections"`
	Accounts    int       `json:"accounts"`
	Isolation   string    `json:"isolation"`
	LockOrder   string    `json:"lock_order"`
	SQLiteBegin string    `json:"sqlite_begin,omitempty"`
	Duration    string    `json:"duration"`
	Rounds      int       `json:"rounds"`
	Compare     bool      `json:"compare"`
	BackoffBase string    `json:"backoff_base"`
	BackoffCap  string    `json:"backoff_cap"`
	MaxAttempts int       `json:"max_attempts"`
	Seed        uint64    `json:"seed"`
	GoVersion   string    `json:"go_version"`
	Started     string    `json:"started"`
	Interrupted bool      `json:"interrupted"`
	Processes   int       `json:"processes,omitempty"`
	Warmup      result    `json:"warmup"`
	Baseline    *result   `json:"baseline"`
	Results     []result  `json:"results"`
	Invariant   invariant `json:"invariant"`
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
	FirstError        string           `json:"first_error,omitempty"`
	// Classes are the per-class numbers of a mixed workload (--hot-share).
	Classes map[string]classResult `json:"classes,omitempty"`
	// ProcessP99Ms is each process's p99, with --processes.
	ProcessP99Ms []float64 `json:"process_p99_ms,omitempty"`
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

// printTable writes the human-readable results.
func printTable(w io.Writer, r *report) {
	fmt.Fprintf(w, "\n%s, isolation %s, lock order %s, %s", r.Backend, r.Isolation, r.LockOrder, r.Duration)
	if r.Compare {
		fmt.Fprintf(w, " per policy in %d interleaved rounds", r.Rounds)
	}
	if r.SQLiteBegin != "" {
		fmt.Fprintf(w, ", BEGIN %s", strings.ToUpper(r.SQLiteBegin))
	}
	fmt.Fprintf(w, ", backoff base %s cap %s\n\n", r.BackoffBase, r.BackoffCap)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "backend\tworkers\taccounts\tpolicy\tcommits/s\t"
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
		line := fmt.Sprintf("%s\t%d\t%d\t%s\t%.0f\t", r.Backend, res.Workers, r.Accounts, res.Policy, res.CommitsPerSecond)
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
	for _, res := range append(rows, r.Warmup) {
		if len(res.RetryCauses) > 0 && res.Policy != warmupName {
			fmt.Fprintf(w, "retries of %s: %s\n", res.Policy, formatCauses(res.RetryCauses))
		}
		if res.FirstError != "" {
			fmt.Fprintf(w, "first failure of %s: %s\n", res.Policy, res.FirstError)
		}
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
// over path, so that a reader never sees half a file.
func writeFileAtomic(path string, b []byte) error {
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
// ends, and once a second during slices of two seconds or more, never while
// a slice is only waiting for its last transfers to finish.
type progress struct {
	w        io.Writer
	terminal bool

	mu      sync.Mutex
	arm     *arm
	label   string
	from    int64
	started time.Time
	length  time.Duration
	stop    chan struct{}
	stopped chan struct{}
	drawn   bool
}

// newProgress returns a progress writing to w.
func newProgress(w io.Writer, terminal bool) *progress {
	return &progress{w: w, terminal: terminal}
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
	p.arm, p.label, p.from, p.started, p.length = a, label, a.commits.Load(), time.Now(), d
	if p.stop == nil {
		p.stop, p.stopped = make(chan struct{}), make(chan struct{})
		every := time.Second
		if p.terminal {
			every = 200 * time.Millisecond
		}
		go p.loop(every, p.stop, p.stopped)
	}
}

func (p *progress) loop(every time.Duration, stop <-chan struct{}, stopped chan<- struct{}) {
	defer close(stopped)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			p.draw()
		}
	}
}

func (p *progress) draw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.terminal && (p.length < 2*time.Second || time.Since(p.started) > p.length) {
		return
	}
	p.drawLocked()
}

// finishLocked prints the final line of the slice that just ended, when
// not on a terminal, so that a log shows every slice.
func (p *progress) finishLocked() {
	if p.arm != nil && !p.terminal {
		p.drawLocked()
	}
	p.arm = nil
}

func (p *progress) drawLocked() {
	a := p.arm
	if a == nil {
		return
	}
	el := time.Since(p.started)
	n := a.commits.Load() - p.from
	rate := float64(n) / el.Seconds()
	apc := 0.0
	if c := a.commits.Load(); c > 0 {
		apc = float64(a.obs.attempts.Load()) / float64(c)
	}
	line := fmt.Sprintf("txnbench  %-24s %5.1fs/%.1fs %8d commits %7.0f/s  %.2f attempts/commit  %d failed",
		p.label, min(el, p.length).Seconds(), p.length.Seconds(), n, rate, apc, a.obs.gaveUp.Load())
	if p.terminal {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.drawn = true
	} else {
		fmt.Fprintln(p.w, line)
	}
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
