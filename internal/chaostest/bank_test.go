package chaostest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
)

// The bank: accounts start with initial each; a transfer moves amount from
// one to another and writes one ledger row carrying its transfer id.
const (
	accounts = 10
	initial  = 1000
)

var (
	// errInsufficient is fn's refusal when the source cannot pay.
	errInsufficient = errors.New("insufficient funds")
	// errRefused is fn's refusal after its writes, so that Run rolls back.
	errRefused = errors.New("transfer refused after its writes")
)

// bank is one backend under the workload.
type bank struct {
	name string
	// transfer runs one transfer through the Runner under test; refuse
	// makes fn fail after its writes.
	transfer func(ctx context.Context, tid int64, from, to, amount int, refuse bool) error
	// ledger returns, read directly from the server, how many ledger rows
	// each transfer id has.
	ledger func(ctx context.Context) (map[int64]int, error)
	// balances returns every account's balance, read directly.
	balances func(ctx context.Context) (map[int]int, error)
	// moves returns what the ledger moved in and out of each account.
	moves func(ctx context.Context) (map[int]int, error)
	// limit returns the Runner's adaptive limit.
	limit func() int
	// keyed makes every transfer name its two accounts as conflict keys.
	keyed bool
}

// callOptions returns the options of a transfer from one account to
// another.
func (b *bank) callOptions(from, to int) []txn.CallOption {
	if !b.keyed {
		return nil
	}
	return []txn.CallOption{txn.Keys(strconv.Itoa(from), strconv.Itoa(to))}
}

// load is the shape of one run of the workload.
type load struct {
	runs    int
	workers int
	// timeout is each Run's context deadline.
	timeout time.Duration
	// rollbackTimeout is the Runner's RollbackTimeout.
	rollbackTimeout time.Duration
	// refuse is the probability that fn fails after its writes.
	refuse float64
	// until, when set, makes workers stop offering Runs once it returns true
	// (runs is then a ceiling).
	until func() bool
	// pause is the time a worker waits after each Run.
	pause time.Duration
}

// outcome of one Run.
type outcome int

const (
	committed outcome = iota
	unknown
	failed
)

// result is what one Run returned.
type result struct {
	tid     int64
	start   time.Time
	elapsed time.Duration
	out     outcome
	err     error
}

// schedSlack is the scheduling delay allowed on top of a Run's deadline
// plus RollbackTimeout: the machine running CI is small and shared, and
// -race slows every goroutine switch.
const schedSlack = time.Second

// offer runs l against b: workers goroutines each offer Runs with fresh
// transfer ids until l.runs are offered (or l.until says stop). It returns
// every Run's result, and fails the test if a Run panicked.
func offer(t *testing.T, b *bank, l load, seed uint64) []result {
	t.Helper()
	var (
		mu      sync.Mutex
		results []result
		next    int64
		panics  []any
		wg      sync.WaitGroup
	)
	take := func() (int64, bool) {
		mu.Lock()
		defer mu.Unlock()
		if int(next) >= l.runs || (l.until != nil && l.until()) {
			return 0, false
		}
		next++
		return next, true
	}
	for w := 0; w < l.workers; w++ {
		wg.Add(1)
		go func(w uint64) {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(seed, w))
			for {
				tid, ok := take()
				if !ok {
					return
				}
				from := rnd.IntN(accounts) + 1
				to := rnd.IntN(accounts-1) + 1
				if to >= from {
					to++
				}
				amount := rnd.IntN(50) + 1
				refuse := rnd.Float64() < l.refuse
				ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
				start := time.Now()
				err := func() (err error) {
					defer func() {
						if p := recover(); p != nil {
							mu.Lock()
							panics = append(panics, p)
							mu.Unlock()
							err = fmt.Errorf("panic: %v", p)
						}
					}()
					return b.transfer(ctx, tid, from, to, amount, refuse)
				}()
				el := time.Since(start)
				cancel()
				out := failed
				switch {
				case err == nil:
					out = committed
				case errors.Is(err, txn.ErrCommitUnknown):
					out = unknown
				}
				mu.Lock()
				results = append(results, result{tid: tid, start: start, elapsed: el, out: out, err: err})
				mu.Unlock()
				if l.pause > 0 {
					time.Sleep(l.pause)
				}
			}
		}(uint64(w))
	}
	wg.Wait()
	// Not require: offer may run outside the test's goroutine.
	assert.Empty(t, panics, "no Run panics")
	sort.Slice(results, func(i, j int) bool { return results[i].start.Before(results[j].start) })
	return results
}

// tally is the reconciliation of a run with the database.
type tally struct {
	offered, committed, unknown, unknownCommitted, failed int
	lost, doubled, phantom                                int
	maxElapsed                                            time.Duration
	errs                                                  map[string]int
}

func (s tally) String() string {
	return fmt.Sprintf("%d Runs offered, %d committed, %d unknown (%d of which committed), %d failed, lost %d, doubled %d, failed-but-written %d, longest Run %v",
		s.offered, s.committed, s.unknown, s.unknownCommitted, s.failed, s.lost, s.doubled, s.phantom, s.maxElapsed.Round(time.Millisecond))
}

// reconcile checks results against the database: balances conserved and
// equal to what the ledger moved, each transfer id at most once in the
// ledger, a row for every nil return, none for any other error but an
// unknown commit outcome, and no Run past its deadline plus
// RollbackTimeout.
func reconcile(t *testing.T, b *bank, l load, results []result) tally {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := b.ledger(ctx)
	require.NoError(t, err)
	bal, err := b.balances(ctx)
	require.NoError(t, err)
	mv, err := b.moves(ctx)
	require.NoError(t, err)

	s := tally{offered: len(results), errs: map[string]int{}}
	bound := l.timeout + l.rollbackTimeout + schedSlack
	seen := map[int64]bool{}
	for _, r := range results {
		seen[r.tid] = true
		n := rows[r.tid]
		if n > 1 {
			s.doubled++
		}
		switch r.out {
		case committed:
			s.committed++
			if n == 0 {
				s.lost++
				t.Errorf("transfer %d: Run returned nil but the ledger has no row", r.tid)
			}
		case unknown:
			s.unknown++
			if n > 0 {
				s.unknownCommitted++
			}
		case failed:
			s.failed++
			s.errs[errKind(r.err)]++
			if n > 0 {
				s.phantom++
				t.Errorf("transfer %d: Run returned %v but the ledger has its row", r.tid, r.err)
			}
		}
		if r.elapsed > s.maxElapsed {
			s.maxElapsed = r.elapsed
		}
		if r.elapsed > bound {
			t.Errorf("transfer %d: Run took %v, past its deadline %v plus RollbackTimeout %v (+%v scheduling slack): %v",
				r.tid, r.elapsed, l.timeout, l.rollbackTimeout, schedSlack, r.err)
		}
	}
	for tid, n := range rows {
		if !seen[tid] {
			t.Errorf("ledger has %d rows of transfer %d, which no Run offered", n, tid)
		}
	}
	total := 0
	for id := 1; id <= accounts; id++ {
		total += bal[id]
		assert.Equal(t, initial+mv[id], bal[id], "account %d: balance is the initial one plus what the ledger moved", id)
	}
	assert.Equal(t, accounts*initial, total, "money is conserved")
	assert.Zero(t, s.lost, "lost")
	assert.Zero(t, s.doubled, "doubled")
	assert.Zero(t, s.phantom, "failed Runs that wrote")
	return s
}

// errKind is a short name for an error, for the figures.
func errKind(err error) string {
	switch {
	case errors.Is(err, errInsufficient):
		return "insufficient funds"
	case errors.Is(err, errRefused):
		return "refused by fn"
	case errors.Is(err, txn.ErrUnavailable):
		return "unavailable (reconnect budget)"
	case errors.Is(err, txn.ErrAttemptsExhausted):
		return "attempt limit"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	}
	var gu *txn.GiveUpError
	if errors.As(err, &gu) {
		return "gave up: " + fmt.Sprint(gu.Reason)
	}
	msg := err.Error()
	if len(msg) > 60 {
		msg = msg[:60]
	}
	return "other: " + msg
}

// figure prints a line of figures in the test log and, when TXN_FIGURES
// names a file (as .ci/run sets it), appends it there so that CI prints it.
func figure(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf(format, args...)
	t.Log(line)
	if path := os.Getenv("TXN_FIGURES"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		require.NoError(t, err)
		_, err = fmt.Fprintf(f, "%s: %s\n", t.Name(), line)
		require.NoError(t, err)
		require.NoError(t, f.Close())
	}
}
