package txntest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/txnkit/txn"
)

// SeedEnv names the environment variable that Random reads its seed from,
// so that a failure seen with a random seed can be reproduced:
// TXNTEST_SEED=1234 go test -run TestThatFailed.
const SeedEnv = "TXNTEST_SEED"

// FaultError is the error Faults inject. Before the commit it is marked
// with txn.Retry, so that Run rolls back and runs fn again; after the
// commit it is returned unmarked and the core reports it as an unknown
// outcome. Match it with errors.As.
type FaultError struct {
	// At is where the fault was injected.
	At txn.InterceptPoint
	// Attempt is the attempt it was injected into (1 for the first).
	Attempt int
}

// Error says where the fault was injected.
func (e *FaultError) Error() string {
	return fmt.Sprintf("txntest: fault injected at %v of attempt %d", e.At, e.Attempt)
}

// Injection is one fault Faults injected.
type Injection struct {
	// At is the point of the attempt where it was injected.
	At txn.InterceptPoint
	// Attempt is the attempt's number, 1 for the first.
	Attempt int
}

// String describes the injection as "attempt 2 failed before COMMIT".
func (i Injection) String() string {
	return "attempt " + strconv.Itoa(i.Attempt) + " " + outcomeAt(i.At)
}

// outcomeAt says what a fault at p did to its attempt.
func outcomeAt(p txn.InterceptPoint) string {
	switch p {
	case txn.InterceptBegin:
		return "failed at BEGIN"
	case txn.InterceptBeforeCommit:
		return "failed before COMMIT"
	case txn.InterceptCommit:
		return "failed at COMMIT"
	case txn.InterceptAfterCommit:
		return "committed but its COMMIT reply was lost"
	}
	return "failed at " + p.String()
}

// Faults is a txn.Interceptor that fails chosen attempts at chosen points:
// install it with Runner.WithInterceptor on the Runner your application
// built, and run the same fn (or the code that calls Run) through that
// view. Every outermost Run of the view counts its own attempts, so a plan
// such as Fail(txn.InterceptBeforeCommit, 1) applies to each Run; nested
// Runs and Savepoints join the outermost transaction, and a fault undoes
// their work with it. Faults is safe for concurrent use; with Random, the
// draws are reproducible from the seed when the Runs are sequential.
type Faults struct {
	mu       sync.Mutex
	fixed    map[Injection]bool
	points   []txn.InterceptPoint // Random only
	max      int                  // Random only: attempts above max never fail
	rnd      *rand.Rand
	seed     uint64
	injected []Injection
	attempts int
}

// Fail returns Faults that fail every Run's attempts with the given
// numbers at point at (and nowhere else). Add more with the Fail method.
// Fail(txn.InterceptBeforeCommit, 1, 2) makes each Run execute fn's
// statements three times and commit the third. Attempt numbers below 1 are
// ignored.
func Fail(at txn.InterceptPoint, attempts ...int) *Faults {
	f := &Faults{fixed: map[Injection]bool{}}
	return f.Fail(at, attempts...)
}

// Fail adds to f the failure of the given attempts at point at, and
// returns f.
func (f *Faults) Fail(at txn.InterceptPoint, attempts ...int) *Faults {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fixed == nil {
		f.fixed = map[Injection]bool{}
	}
	for _, n := range attempts {
		if n >= 1 {
			f.fixed[Injection{At: at, Attempt: n}] = true
		}
	}
	return f
}

// Random returns Faults drawn from a seeded random source: at each of the
// given points (by default BEGIN, before COMMIT and COMMIT) of each of the
// first maxFailures attempts of a Run, the attempt fails with probability
// one half, so that no Run sees more than maxFailures faults. The seed is
// read from the environment variable TXNTEST_SEED when it is set, and drawn
// at random otherwise; if t has failed when it ends, the seed is logged
// with the command that reproduces the draws. Include
// txn.InterceptAfterCommit only for Idempotent calls (or to test the
// handling of ErrCommitUnknown).
func Random(t testing.TB, maxFailures int, points ...txn.InterceptPoint) *Faults {
	t.Helper()
	seed := rand.Uint64()
	if s := os.Getenv(SeedEnv); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("txntest: %s=%q is not an unsigned integer: %v", SeedEnv, s, err)
		}
		seed = v
	}
	f := RandomSeed(seed, maxFailures, points...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("txntest: faults were drawn with seed %d; run again with %s=%d to draw the same ones (%v)",
				seed, SeedEnv, seed, f.Injected())
		}
	})
	return f
}

// RandomSeed is Random with an explicit seed, for tests that fix it in the
// code.
func RandomSeed(seed uint64, maxFailures int, points ...txn.InterceptPoint) *Faults {
	if len(points) == 0 {
		points = []txn.InterceptPoint{txn.InterceptBegin, txn.InterceptBeforeCommit, txn.InterceptCommit}
	}
	return &Faults{
		fixed:  map[Injection]bool{},
		points: slices.Clone(points),
		max:    maxFailures,
		rnd:    rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d)),
		seed:   seed,
	}
}

// Seed returns the seed of Faults made by Random or RandomSeed, and 0 for
// others.
func (f *Faults) Seed() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seed
}

// Injected returns the faults injected so far, in order.
func (f *Faults) Injected() []Injection {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.injected)
}

// Attempts returns how many attempts (of all Runs) consulted f so far.
func (f *Faults) Attempts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts
}

// Intercept implements txn.Interceptor: it returns a *FaultError, marked
// retryable before the commit, when the plan fails attempt at point at, and
// nil otherwise.
func (f *Faults) Intercept(_ context.Context, at txn.InterceptPoint, attempt int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if at == txn.InterceptBegin {
		f.attempts++
	}
	in := Injection{At: at, Attempt: attempt}
	fail := f.fixed[in]
	if !fail && f.rnd != nil && attempt <= f.max && slices.Contains(f.points, at) {
		fail = f.rnd.IntN(2) == 0
	}
	if !fail {
		return nil
	}
	f.injected = append(f.injected, in)
	err := &FaultError{At: at, Attempt: attempt}
	if at == txn.InterceptAfterCommit {
		return err
	}
	return txn.Retry(err)
}
