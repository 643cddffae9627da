package main

import (
	"context"
	"errors"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/txnkit/txn"
)

// counter is the Observer of one arm: it counts attempts, retries by cause
// and give-ups. The plain arm, which has no Runner, counts the same through
// plainTransfer.
type counter struct {
	txn.NopObserver
	attempts atomic.Int64
	retries  atomic.Int64
	gaveUp   atomic.Int64
	code     func(error) string

	mu       sync.Mutex
	causes   map[string]int64
	failures map[string]int64
}

// AttemptStarted counts an execution of fn.
func (c *counter) AttemptStarted(context.Context, txn.AttemptEvent) { c.attempts.Add(1) }

// RetryScheduled counts a retry under the name of the error that caused it.
func (c *counter) RetryScheduled(_ context.Context, e txn.RetryEvent) {
	c.retries.Add(1)
	c.count(&c.causes, e.Err, "other ("+e.Class.String()+")")
}

// GaveUp counts a Run that returned an error.
func (c *counter) GaveUp(_ context.Context, e txn.GiveUpEvent) {
	c.gaveUp.Add(1)
	c.count(&c.failures, e.Err, "other")
}

// count adds one to the entry of m named after err (other when the store
// has no name for it).
func (c *counter) count(m *map[string]int64, err error, other string) {
	name := c.code(err)
	if name == "" {
		name = other
	}
	c.mu.Lock()
	if *m == nil {
		*m = map[string]int64{}
	}
	(*m)[name]++
	c.mu.Unlock()
}

func (c *counter) causeCounts() (retries, failures map[string]int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.causes), maps.Clone(c.failures)
}

// observerRoute is the Observer an arm's Runner is built with: it passes
// every event to the counter set last, so that the warm-up slice an arm
// runs on its own Runner is counted apart from its measured slices.
type observerRoute struct {
	txn.NopObserver
	to atomic.Pointer[counter]
}

// newRoute returns a route to c.
func newRoute(c *counter) *observerRoute {
	r := &observerRoute{}
	r.to.Store(c)
	return r
}

// AttemptStarted passes the event on.
func (r *observerRoute) AttemptStarted(ctx context.Context, e txn.AttemptEvent) {
	r.to.Load().AttemptStarted(ctx, e)
}

// RetryScheduled passes the event on.
func (r *observerRoute) RetryScheduled(ctx context.Context, e txn.RetryEvent) {
	r.to.Load().RetryScheduled(ctx, e)
}

// GaveUp passes the event on.
func (r *observerRoute) GaveUp(ctx context.Context, e txn.GiveUpEvent) {
	r.to.Load().GaveUp(ctx, e)
}

// arm is one configuration measured by a run: a policy at --workers, the
// plain arm (no library), or the one-worker serial baseline. Its numbers
// add up over all its slices.
type arm struct {
	name     string
	workers  int
	baseline bool
	transfer TransferFunc
	// stats reads the arm's Runner's admission state (nil for plain).
	stats   func() txn.AdmissionStats
	perCall func(transfer) []callOption
	obs     *counter
	// route is the Observer of the arm's Runner (and what the plain arm
	// counts through): it points at obs but for the arm's warm-up.
	route *observerRoute
	// description, if set, replaces the policy's in the report.
	description string
	// classLat holds the latencies per class of a mixed workload.
	classLat map[string][]time.Duration
	// commitTimes are the times of the commits, from the start of the
	// arm's first measured slice, its slices laid end to end (--timeline).
	commitTimes []time.Duration

	commits  atomic.Int64 // live, for the progress line
	inFlight atomic.Int64 // transfers under way, for the progress line
	failed   int64
	unknown  int64 // failed with txn.ErrCommitUnknown: may have committed
	rejected int64
	elapsed  time.Duration
	lat      []time.Duration
	firstErr error
}

// newArm builds the arm of policy p (with workers workers) over store s.
func newArm(s Store, p *policy, params policyParams, workers int, seed uint64, baseline bool) *arm {
	a := &arm{name: p.name, workers: workers, baseline: baseline, perCall: p.perCall, obs: &counter{code: s.Code}}
	a.route = newRoute(a.obs)
	if baseline {
		a.name = "serial"
	}
	if p.plain {
		a.transfer = plainTransfer(s.Plain(), a.route)
		return a
	}
	a.transfer, a.stats = s.Bank(runnerOptions(p, params, a.route, seed)...)
	return a
}

// warmupArm returns an arm that runs a's transfers, on a's own Runner, but
// keeps its own tallies, and routes the Runner's events to it until
// a.endWarmup is called.
func (a *arm) warmupArm() *arm {
	w := &arm{name: a.name, workers: a.workers, baseline: a.baseline, transfer: a.transfer, stats: a.stats, perCall: a.perCall,
		obs: &counter{code: a.obs.code}, route: a.route, description: a.description}
	a.route.to.Store(w.obs)
	return w
}

// endWarmup routes the events of a's Runner back to a's own tallies.
func (a *arm) endWarmup() { a.route.to.Store(a.obs) }

// plainTransfer counts the attempts and failures of transfers run by
// plain, as the Observer does for a Runner, in the counter r points at. A
// transfer refused for insufficient funds is not a failure.
func plainTransfer(plain TransferFunc, r *observerRoute) TransferFunc {
	return func(ctx context.Context, t transfer, _ ...callOption) error {
		c := r.to.Load()
		c.attempts.Add(1)
		err := plain(ctx, t)
		if err != nil && !errors.Is(err, errInsufficientFunds) {
			c.gaveUp.Add(1)
			c.count(&c.failures, err, "other")
		}
		return err
	}
}

// workload is what every worker needs to pick and run transfers.
type workload struct {
	accounts   int
	sorted     bool
	txnTimeout time.Duration
	hotShare   float64 // shapes.go
	// hotWorkers is how many of an arm's workers (the first ones) transfer
	// on the hot pair only (shapes.go).
	hotWorkers int
	// timeline makes slices record the time of every commit.
	timeline bool
	// trace is the interval of the admission trace written to traceOut
	// while a slice runs (0: none).
	trace    time.Duration
	traceOut io.Writer
	// now is the clock of the slices; nil is time.Now. Tests set a fake one.
	now func() time.Time
}

// clock returns the workload's clock.
func (w workload) clock() func() time.Time {
	if w.now == nil {
		return time.Now
	}
	return w.now
}

// next returns a random transfer between two distinct accounts.
func (w workload) next(rng *rand.Rand) transfer {
	if w.hotShare > 0 {
		return w.nextShaped(rng)
	}
	from := rng.Int64N(int64(w.accounts)) + 1
	to := rng.Int64N(int64(w.accounts)-1) + 1
	if to >= from {
		to++
	}
	return transfer{from: from, to: to, amount: rng.Int64N(100) + 1, sorted: w.sorted}
}

// slice runs a's workers until d has passed (or ctx ends) and adds what
// they did to a. Transfers under way at the end finish and count; the
// slice's elapsed time runs until the last one has. Each transfer has
// txnTimeout to commit.
func (w workload) slice(ctx context.Context, a *arm, d time.Duration, seed uint64) {
	type tally struct {
		lat, hotLat, coldLat      []time.Duration
		commitAt                  []time.Duration
		failed, unknown, rejected int64
		firstErr                  error
	}
	now := w.clock()
	tallies := make([]tally, a.workers)
	start := now()
	end := start.Add(d)
	classes := w.classes()
	if w.trace > 0 && w.traceOut != nil && a.stats != nil {
		stop := traceAdmission(w.traceOut, w.trace, a.name, a.stats)
		defer stop()
	}
	var wg sync.WaitGroup
	for i := range a.workers {
		wg.Add(1)
		go func(worker int, t *tally, rng *rand.Rand) {
			defer wg.Done()
			for ctx.Err() == nil && now().Before(end) {
				tr := w.nextFor(worker, rng)
				var opts []callOption
				if a.perCall != nil {
					opts = a.perCall(tr)
				}
				// A transfer under way finishes even when ctx ends, so
				// that every Run's outcome is known to the ledger check.
				tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.txnTimeout)
				a.inFlight.Add(1)
				t0 := now()
				err := a.transfer(tctx, tr, opts...)
				t1 := now()
				el := t1.Sub(t0)
				a.inFlight.Add(-1)
				cancel()
				switch {
				case err == nil:
					t.lat = append(t.lat, el)
					if w.timeline {
						t.commitAt = append(t.commitAt, t1.Sub(start))
					}
					if classes {
						if tr.hot {
							t.hotLat = append(t.hotLat, el)
						} else {
							t.coldLat = append(t.coldLat, el)
						}
					}
					a.commits.Add(1)
				case errors.Is(err, errInsufficientFunds):
					t.rejected++
				default:
					t.failed++
					if errors.Is(err, txn.ErrCommitUnknown) {
						t.unknown++
					}
					if t.firstErr == nil {
						t.firstErr = err
					}
				}
			}
		}(i, &tallies[i], rand.New(rand.NewPCG(seed, uint64(i))))
	}
	wg.Wait()
	// The slice's commit times follow the arm's earlier slices.
	offset := a.elapsed
	a.elapsed += now().Sub(start)
	for _, t := range tallies {
		a.lat = append(a.lat, t.lat...)
		for _, at := range t.commitAt {
			a.commitTimes = append(a.commitTimes, offset+at)
		}
		if classes {
			if a.classLat == nil {
				a.classLat = map[string][]time.Duration{}
			}
			if w.hasClass(classHot, a.workers) {
				a.classLat[classHot] = append(a.classLat[classHot], t.hotLat...)
			}
			if w.hasClass(classCold, a.workers) {
				a.classLat[classCold] = append(a.classLat[classCold], t.coldLat...)
			}
		}
		a.failed += t.failed
		a.unknown += t.unknown
		a.rejected += t.rejected
		if a.firstErr == nil {
			a.firstErr = t.firstErr
		}
	}
}

// schedule returns, for each round, the order in which the arms run: the
// arms rotated by the round number, so that none always runs first (after
// the previous round's last arm) or last.
func schedule(arms, rounds int) [][]int {
	out := make([][]int, rounds)
	for r := range rounds {
		for i := range arms {
			out[r] = append(out[r], (i+r)%arms)
		}
	}
	return out
}

// latencyStats summarises latencies.
type latencyStats struct {
	P50, P90, P99, Max time.Duration
}

// summarize sorts lat and returns its percentiles (nearest rank).
func summarize(lat []time.Duration) latencyStats {
	if len(lat) == 0 {
		return latencyStats{}
	}
	s := slices.Clone(lat)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return latencyStats{P50: q(0.50), P90: q(0.90), P99: q(0.99), Max: s[len(s)-1]}
}
