package main

import (
	"context"
	"errors"
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

// arm is one configuration measured by a run: a policy at --workers, the
// plain arm (no library), or the one-worker serial baseline. Its numbers
// add up over all its slices.
type arm struct {
	name     string
	workers  int
	baseline bool
	transfer TransferFunc
	perCall  func(transfer) []callOption
	obs      *counter

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
	if baseline {
		a.name = "serial"
	}
	if p.plain {
		a.transfer = plainTransfer(s.Plain(), a.obs)
		return a
	}
	a.transfer = s.Bank(runnerOptions(p, params, a.obs, seed)...)
	return a
}

// plainTransfer counts the attempts and failures of transfers run by
// plain, as the Observer does for a Runner. A transfer refused for
// insufficient funds is not a failure.
func plainTransfer(plain TransferFunc, c *counter) TransferFunc {
	return func(ctx context.Context, t transfer, _ ...callOption) error {
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
}

// next returns a random transfer between two distinct accounts.
func (w workload) next(rng *rand.Rand) transfer {
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
		lat                       []time.Duration
		failed, unknown, rejected int64
		firstErr                  error
	}
	tallies := make([]tally, a.workers)
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for i := range a.workers {
		wg.Add(1)
		go func(t *tally, rng *rand.Rand) {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(end) {
				tr := w.next(rng)
				var opts []callOption
				if a.perCall != nil {
					opts = a.perCall(tr)
				}
				// A transfer under way finishes even when ctx ends, so
				// that every Run's outcome is known to the ledger check.
				tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.txnTimeout)
				a.inFlight.Add(1)
				t0 := time.Now()
				err := a.transfer(tctx, tr, opts...)
				el := time.Since(t0)
				a.inFlight.Add(-1)
				cancel()
				switch {
				case err == nil:
					t.lat = append(t.lat, el)
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
		}(&tallies[i], rand.New(rand.NewPCG(seed, uint64(i))))
	}
	wg.Wait()
	a.elapsed += time.Since(start)
	for _, t := range tallies {
		a.lat = append(a.lat, t.lat...)
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
