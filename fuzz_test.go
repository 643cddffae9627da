package txn_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/fakeclock"
)

// FuzzRun decodes its input into a scenario (Runner options, one to three
// concurrent Runs, and for each Run a script of what the database does at
// every BEGIN, COMMIT, ROLLBACK and savepoint, and what fn does in every
// attempt), runs it over a scripted database and a fake clock, and checks
// the guarantees of the README's "What Run guarantees" against what the
// database saw:
//
//   - the writes committed are exactly those of the attempt Run reports
//     committed, with nested levels that failed permanently undone; an
//     attempt whose COMMIT reply was lost may also have committed, and
//     only then may fn have run again, only for an Idempotent call;
//   - a Run that returns nil committed its last attempt; one that returns an
//     error reports what ended it (fn's permanent error, a GiveUpError
//     wrapping the last error, ErrCommitUnknown once a commit's outcome was
//     unknown, the context's error); fn is never run again after a
//     permanent error, a panic or an unknown commit (unless Idempotent);
//   - tries (runs of fn plus failed BEGINs) stay within MaxAttempts, COMMIT
//     re-sends too; no BEGIN or COMMIT follows the end of the context;
//     no backoff sleep ends at or past the deadline or MaxElapsed;
//   - every transaction begun is ended exactly once (a ROLLBACK, or COMMITs
//     of which only the last may have another answer than commit-retryable),
//     ROLLBACK runs on a live context bounded by RollbackTimeout, also after
//     panics and runtime.Goexit, which reach the caller unchanged;
//   - OnCommit callbacks run only after Run committed, once each, in
//     registration order, without those of savepoints rolled back;
//   - observer events come from the Run's goroutine, number the attempts
//     1, 2, ..., and end with one terminal event (none after a panic in fn
//     or a Goexit); the terminal event carries Run's error;
//   - at the end no admission slot, key or fake-clock timer is held.
func FuzzRun(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sc := decodeScenario(data)
		sc.run(t)
	})
}

// FuzzRunBounded is FuzzRun over a backend that bounds the lock waits of
// the adaptive limit's probes (txn.LockWaitBounder), with the limit put in
// the contended state a storm leaves (txn.Contend), where fn's permanent
// "unique violation" is, in every transaction begun bounded and every one
// with an odd id, a lock wait that reached its bound: besides FuzzRun's guarantees, such an error is
// retried exactly when its transaction began bounded (from fn or from a
// nested level it swallowed), a Run has at most one attempt lost to the
// bound, and its last attempt under MaxAttempts is never bounded.
func FuzzRunBounded(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sc := decodeScenario(data)
		sc.bounded = true
		sc.run(t)
	})
}

// FuzzRunBounded's scenarios reach the probes: over random inputs, some
// transactions begin bounded and some are lost to their bound, so that
// the fuzzer checks those paths and not only their absence.
func TestFuzzRunBoundedReachesProbes(t *testing.T) {
	rnd := newRand(7)
	var probes [2]int
	for i := 0; i < 30000 && (probes[0] < 50 || probes[1] < 5); i++ {
		data := make([]byte, 64+rnd.IntN(192))
		for j := range data {
			data[j] = byte(rnd.Uint32())
		}
		sc := decodeScenario(data)
		sc.bounded, sc.probes = true, &probes
		t.Run("", func(t *testing.T) { sc.run(t) })
	}
	t.Logf("transactions begun bounded: %d; lost to the bound: %d", probes[0], probes[1])
	if probes[0] == 0 || probes[1] == 0 {
		t.Fatalf("random scenarios reached %d bounded transactions, %d lost to the bound", probes[0], probes[1])
	}
}

// ---------------------------------------------------------------------------
// Decoding.

// byteReader reads the fuzz input; past its end it reads zeros.
type byteReader struct {
	b []byte
	i int
}

func (r *byteReader) next() byte {
	if r.i >= len(r.b) {
		r.i++
		return 0
	}
	c := r.b[r.i]
	r.i++
	return c
}

func (r *byteReader) n(mod int) int { return int(r.next()) % mod }

// fuzz ops of fn's program.
const (
	opWrite = iota
	opOnCommit
	opOnCommitPanic
	opNested
	opSavepoint
	opCancel
	opAdvance
	opRetNil
	opRetRetryable
	opRetPermanent
	opRetRetryMarked
	opRetPermanentMarked
	opRetTypedNil
	opRetCommitUnknown
	opRetConnLost
	opRetAmbiguous
	opPanic
	opGoexit
	numOps
)

var opNames = [...]string{"write", "oncommit", "oncommit-panic", "nested", "savepoint", "cancel", "advance",
	"ret-nil", "ret-retryable", "ret-permanent", "ret-Retry", "ret-Permanent", "ret-typednil",
	"ret-commitunknown", "ret-connlost", "ret-ambiguous", "panic", "goexit"}

type op struct {
	kind      int
	arg       int  // advance: ms
	propagate bool // nested/savepoint: return its error from the caller
	body      []op // nested/savepoint
}

func (o op) String() string {
	s := opNames[o.kind]
	switch o.kind {
	case opAdvance:
		s += fmt.Sprintf("(%dms)", o.arg)
	case opNested, opSavepoint:
		s += fmt.Sprintf("(prop=%v)%v", o.propagate, o.body)
	}
	return s
}

func decodeProgram(r *byteReader, depth int) []op {
	n := r.n(8)
	var prog []op
	for range n {
		o := op{kind: r.n(numOps)}
		switch o.kind {
		case opAdvance:
			o.arg = r.n(40)
		case opNested, opSavepoint:
			o.propagate = r.next()&1 == 1
			if depth < 2 {
				o.body = decodeProgram(r, depth+1)
			}
		}
		prog = append(prog, o)
	}
	return prog
}

// Database outcomes.
const (
	beginOK = iota
	beginRetryable
	beginConnLost
	beginPermanent
	beginAmbiguous
	numBegin
)

const (
	commitOK             = iota
	commitRetryable      // definite: nothing applied
	commitPermanent      // definite: nothing applied
	commitLostApplied    // applied, reply lost (ClassConnLost)
	commitLostNotApplied // not applied, reply lost (ClassConnLost)
	commitAmbigApplied   // applied, ClassAmbiguous
	commitResend         // ClassCommitRetryable, nothing applied, tx still open
	commitCancelApplied  // the context ends during COMMIT, which applied
	commitCancelLost     // the context ends during COMMIT, which did not apply
	numCommit
)

var commitNames = [...]string{"ok", "retryable", "permanent", "lost-applied", "lost-not-applied",
	"ambig-applied", "resend", "cancel-applied", "cancel-lost"}

type runScript struct {
	begins     []int
	programs   [][]op
	commits    []int
	rollbacks  []bool // true: ROLLBACK fails
	savepoints []int  // beginOK, or the class of failure
	keys       []string
	deadline   time.Duration // 0: none
	idempotent bool
	maxAtt     int // -1: the Runner's
}

type scenario struct {
	savepoints  bool
	observer    bool
	adaptive    int // 0 default, 1 NoAdaptive, 2 Adaptive(1), 3 Adaptive(2), 4 StartOpen
	budget      int // 0 none, 1 (0,0), 2 (0.5,1)
	noReconnect bool
	maxAttempts int // -1 default
	maxElapsed  time.Duration
	backoff     int
	runs        []runScript
	raw         []byte
	// bounded (FuzzRunBounded): the backend bounds probes' lock waits,
	// and fn's "unique violation" is a lock wait that reached its bound
	// in every transaction begun bounded and every one with an odd id.
	bounded bool
	// probes, when not nil, counts the transactions begun bounded and
	// those lost to their bound (TestFuzzRunBoundedReachesProbes).
	probes *[2]int
}

func decodeScenario(data []byte) *scenario {
	r := &byteReader{b: data}
	h := r.next()
	sc := &scenario{raw: data}
	sc.savepoints = h&1 == 1
	sc.observer = h&2 == 2
	sc.noReconnect = h&4 == 4
	nruns := 1 + int(h>>3)%3
	sc.adaptive = r.n(5)
	sc.budget = r.n(3)
	if m := r.n(8); m == 0 {
		sc.maxAttempts = -1
	} else {
		sc.maxAttempts = m - 1
	}
	if e := r.n(8); e > 0 {
		sc.maxElapsed = time.Duration(e*e) * time.Millisecond
	}
	sc.backoff = r.n(3)
	keysets := [][]string{nil, {"a"}, {"b"}, {"a", "b"}}
	for range nruns {
		var rs runScript
		b := r.next()
		rs.idempotent = b&1 == 1
		rs.keys = keysets[int(b>>1)%4]
		if d := int(b>>3) % 8; d > 0 {
			rs.deadline = time.Duration(d*d*2) * time.Millisecond
		}
		if m := r.n(6); m == 0 {
			rs.maxAtt = -1
		} else {
			rs.maxAtt = m - 1
		}
		nAtt := r.n(6)
		for range nAtt {
			rs.begins = append(rs.begins, []int{beginOK, beginOK, beginOK, beginRetryable, beginConnLost, beginPermanent, beginAmbiguous}[r.n(7)])
			rs.programs = append(rs.programs, decodeProgram(r, 0))
			rs.commits = append(rs.commits, r.n(numCommit))
			rs.rollbacks = append(rs.rollbacks, r.n(4) == 0)
			rs.savepoints = append(rs.savepoints, []int{beginOK, beginOK, beginOK, beginRetryable, beginPermanent}[r.n(5)])
		}
		sc.runs = append(sc.runs, rs)
	}
	return sc
}

func (sc *scenario) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "savepoints=%v observer=%v adaptive=%d budget=%d noReconnect=%v maxAttempts=%d maxElapsed=%v backoff=%d\n",
		sc.savepoints, sc.observer, sc.adaptive, sc.budget, sc.noReconnect, sc.maxAttempts, sc.maxElapsed, sc.backoff)
	for i, rs := range sc.runs {
		fmt.Fprintf(&b, "run %d: keys=%v deadline=%v idempotent=%v maxAtt=%d\n", i, rs.keys, rs.deadline, rs.idempotent, rs.maxAtt)
		for j := range rs.begins {
			fmt.Fprintf(&b, "  try %d: begin=%d sp=%d commit=%s rollbackFails=%v fn=%v\n", j, rs.begins[j], rs.savepoints[j],
				commitNames[rs.commits[j]], rs.rollbacks[j], rs.programs[j])
		}
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// Errors.

// fErr is a database error of a fixed class.
type fErr struct {
	class txn.Class
	msg   string
	// lockWait marks a lock wait that reached its bound: the fake
	// backend's LockWaitExpired recognises it (FuzzRunBounded).
	lockWait bool
}

func (e *fErr) Error() string { return e.msg }

func newErr(c txn.Class, format string, args ...any) *fErr {
	return &fErr{class: c, msg: fmt.Sprintf(format, args...)}
}

// nilErr is an error type whose Error method fails on a nil receiver, as
// many do; fn returns it as a typed nil.
type nilErr struct{ msg string }

func (e *nilErr) Error() string { return e.msg }

// classOf is the fake backend's table: the class of the first *fErr on the
// chain. It never calls Error.
func classOf(err error) txn.Class {
	var fe *fErr
	if errors.As(err, &fe) && fe != nil {
		return fe.class
	}
	return txn.ClassPermanent
}

// safeString formats err, whose Error method may panic (a typed nil).
func safeString(err error) (s string) {
	defer func() {
		if recover() != nil {
			s = fmt.Sprintf("%T(panicking Error)", err)
		}
	}()
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// ---------------------------------------------------------------------------
// The fake database.

type fuzzRunKey struct{}

type tx struct {
	id      int
	bounded bool // begun by BeginBoundedWait (FuzzRunBounded)
	run     *runRec
	writes  []string
	marks   []int
	ended   bool // rolled back, or a COMMIT answered other than commit-retryable
	commits int  // COMMITs sent
	rbs     int  // ROLLBACKs
	applied int  // times its writes were applied
	// lastCommit is the script of the last COMMIT.
	lastCommit int
	// what fn left (set when fn returned normally)
	fnReturned bool
	model      []string
	modelCbs   []int
	fnErr      error // effective error of the attempt as the model computes it
	poisoned   bool
	panicVal   any   // what fn panicked with
	commitErr  error // what the last COMMIT returned
}

type fuzzDB struct {
	t      *testing.T
	mu     sync.Mutex
	nextID int
	txs    []*tx
	sc     *scenario
	rbTO   time.Duration
	bad    []string
	// marks holds the errors fn built with txn.Retry and txn.Permanent,
	// and their class.
	marks sync.Map
}

func (d *fuzzDB) fail(format string, args ...any) {
	d.mu.Lock()
	d.bad = append(d.bad, fmt.Sprintf(format, args...))
	d.mu.Unlock()
}

func runOf(ctx context.Context) *runRec {
	rr, _ := ctx.Value(fuzzRunKey{}).(*runRec)
	return rr
}

func (d *fuzzDB) Begin(ctx context.Context, _ []txn.BeginOption[*tx]) (*tx, error) {
	rr := runOf(ctx)
	if rr == nil {
		d.fail("BEGIN on a context that carries no Run")
		return nil, errors.New("no run")
	}
	if ctx.Err() != nil && rr.cancelledByOwn() {
		rr.failf("BEGIN after the Run's context ended on its own goroutine")
	}
	i := rr.beginIdx
	rr.beginIdx++
	b := beginOK
	if i < len(rr.script.begins) {
		b = rr.script.begins[i]
	}
	var err error
	switch b {
	case beginRetryable:
		err = newErr(txn.ClassRetryable, "begin %d: conflict", i)
	case beginConnLost:
		err = newErr(txn.ClassConnLost, "begin %d: connection refused", i)
	case beginPermanent:
		err = newErr(txn.ClassPermanent, "begin %d: permission denied", i)
	case beginAmbiguous:
		err = newErr(txn.ClassAmbiguous, "begin %d: unknown", i)
	}
	if err != nil {
		rr.add(evBeginFail, nil, err)
		return nil, err
	}
	d.mu.Lock()
	d.nextID++
	t := &tx{id: d.nextID, run: rr}
	d.txs = append(d.txs, t)
	d.mu.Unlock()
	rr.add(evBegin, t, nil)
	return t, nil
}

func (d *fuzzDB) Commit(ctx context.Context, t *tx) error {
	rr := t.run
	if ctx.Err() != nil && rr.cancelledByOwn() {
		rr.failf("COMMIT of tx %d after the Run's context ended on its own goroutine", t.id)
	}
	d.mu.Lock()
	if t.ended {
		d.mu.Unlock()
		rr.failf("COMMIT of tx %d, which had ended", t.id)
		return fmt.Errorf("fuzzdb: %w", txn.ErrTxDone)
	}
	i := rr.commitIdx
	rr.commitIdx++
	c := commitOK
	if i < len(rr.script.commits) {
		c = rr.script.commits[i]
	}
	t.commits++
	t.lastCommit = c
	var err error
	apply := false
	switch c {
	case commitOK:
		apply = true
	case commitRetryable:
		err = newErr(txn.ClassRetryable, "commit %d: serialization failure", t.id)
	case commitPermanent:
		err = newErr(txn.ClassPermanent, "commit %d: check violation", t.id)
	case commitLostApplied, commitCancelApplied:
		apply = true
		err = newErr(txn.ClassConnLost, "commit %d: connection reset", t.id)
	case commitLostNotApplied, commitCancelLost:
		err = newErr(txn.ClassConnLost, "commit %d: connection reset", t.id)
	case commitAmbigApplied:
		apply = true
		err = newErr(txn.ClassAmbiguous, "commit %d: unknown result", t.id)
	case commitResend:
		err = newErr(txn.ClassCommitRetryable, "commit %d: UnknownTransactionCommitResult", t.id)
	}
	if c != commitResend {
		t.ended = true
	}
	var snapshot []string
	if apply {
		t.applied++
		snapshot = slices.Clone(t.writes)
	}
	d.mu.Unlock()
	if c == commitCancelApplied || c == commitCancelLost {
		rr.cancel(context.Canceled)
	}
	t.commitErr = err
	rr.add(evCommit, t, err)
	if apply {
		rr.mu.Lock()
		rr.appliedWrites = append(rr.appliedWrites, appliedTx{t: t, writes: snapshot})
		rr.mu.Unlock()
	}
	return err
}

func (d *fuzzDB) Rollback(ctx context.Context, t *tx) error {
	rr := t.run
	if ctx.Err() != nil {
		rr.failf("ROLLBACK of tx %d on a context already done: %v", t.id, ctx.Err())
	}
	if dl, ok := ctx.Deadline(); !ok {
		rr.failf("ROLLBACK of tx %d on a context without deadline", t.id)
	} else if time.Until(dl) > d.rbTO {
		rr.failf("ROLLBACK of tx %d has %v, more than RollbackTimeout %v", t.id, time.Until(dl), d.rbTO)
	}
	d.mu.Lock()
	t.rbs++
	if t.commits > 0 {
		d.mu.Unlock()
		rr.failf("ROLLBACK of tx %d after COMMIT was sent", t.id)
		return fmt.Errorf("fuzzdb: %w", txn.ErrTxDone)
	}
	if t.ended {
		d.mu.Unlock()
		rr.failf("second ROLLBACK of tx %d", t.id)
		return fmt.Errorf("fuzzdb: %w", txn.ErrTxDone)
	}
	t.ended = true
	t.writes = nil
	i := rr.rollbackIdx
	rr.rollbackIdx++
	failRB := i < len(rr.script.rollbacks) && rr.script.rollbacks[i]
	d.mu.Unlock()
	rr.add(evRollback, t, nil)
	if failRB {
		return newErr(txn.ClassConnLost, "rollback %d: connection reset", t.id)
	}
	return nil
}

func (d *fuzzDB) Classify(err error) txn.Class { return classOf(err) }

// put writes key in t, unless t has ended.
func (d *fuzzDB) put(t *tx, key string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t.ended {
		return false
	}
	t.writes = append(t.writes, key)
	return true
}

// fuzzSPDB adds savepoints.
type fuzzSPDB struct{ *fuzzDB }

func (s fuzzSPDB) BeginSavepoint(ctx context.Context, t *tx, name string) (*tx, error) {
	rr := t.run
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.ended {
		rr.failf("SAVEPOINT on tx %d, which had ended", t.id)
		return nil, fmt.Errorf("fuzzdb: %w", txn.ErrTxDone)
	}
	i := rr.spIdx
	rr.spIdx++
	if i < len(rr.script.savepoints) {
		switch rr.script.savepoints[i] {
		case beginRetryable:
			return nil, newErr(txn.ClassRetryable, "savepoint %d: deadlock", t.id)
		case beginPermanent:
			return nil, newErr(txn.ClassPermanent, "savepoint %d: syntax", t.id)
		}
	}
	t.marks = append(t.marks, len(t.writes))
	return t, nil
}

func (s fuzzSPDB) ReleaseSavepoint(ctx context.Context, t *tx, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.ended {
		t.run.failf("RELEASE on tx %d, which had ended", t.id)
		return fmt.Errorf("fuzzdb: %w", txn.ErrTxDone)
	}
	t.marks = t.marks[:len(t.marks)-1]
	return nil
}

func (s fuzzSPDB) RollbackToSavepoint(ctx context.Context, t *tx, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.ended {
		t.run.failf("ROLLBACK TO SAVEPOINT on tx %d, which had ended", t.id)
		return fmt.Errorf("fuzzdb: %w", txn.ErrTxDone)
	}
	if len(t.marks) == 0 {
		t.run.failf("ROLLBACK TO SAVEPOINT on tx %d without savepoint", t.id)
		return nil
	}
	m := t.marks[len(t.marks)-1]
	t.marks = t.marks[:len(t.marks)-1]
	t.writes = t.writes[:m]
	return nil
}

// ---------------------------------------------------------------------------
// The clock and the context.

// fuzzClock is the fake clock; its Sleep checks the bounds of every backoff
// (the deadline and MaxElapsed in scenarios of one Run).
type fuzzClock struct {
	*fakeclock.Clock
	single bool // one Run: elapsed time is its own
	sc     *scenario
}

func (c fuzzClock) Sleep(ctx context.Context, d time.Duration) error {
	rr := runOf(ctx)
	now := c.Now()
	if rr == nil {
		return c.Clock.Sleep(ctx, d)
	}
	wake := now.Add(d)
	// Exact only while one Run owns the clock: with several, another
	// Run's sleep can move the time between Run's reading and this one.
	if dl, ok := ctx.Deadline(); ok && c.single && !wake.Before(dl) {
		rr.failf("backoff sleep of %v ends at or past the deadline (%v left)", d, dl.Sub(now))
	}
	if me := rr.maxElapsed; c.single && me > 0 && wake.Sub(rr.start) >= me {
		rr.failf("backoff sleep of %v ends %v after the start, MaxElapsed %v", d, wake.Sub(rr.start), me)
	}
	if d < 0 {
		rr.failf("negative sleep %v", d)
	}
	err := c.Clock.Sleep(ctx, d)
	rr.add(evSleep, nil, err)
	return err
}

// fuzzCtx is a context whose deadline is on the fake clock: it ends with
// DeadlineExceeded when the fake time reaches it.
type fuzzCtx struct {
	context.Context // WithCancelCause
	dl              time.Time
}

func (c *fuzzCtx) Deadline() (time.Time, bool) { return c.dl, !c.dl.IsZero() }

func (c *fuzzCtx) Err() error {
	if c.Context.Err() == nil {
		return nil
	}
	return context.Cause(c.Context)
}

// ---------------------------------------------------------------------------
// What one Run did.

const (
	evBegin = iota
	evBeginFail
	evFn
	evCommit
	evRollback
	evSleep
)

type runEv struct {
	kind int
	t    *tx
	err  error
}

type appliedTx struct {
	t      *tx
	writes []string
}

type runRec struct {
	idx    int
	script runScript
	goid   uint64
	start  time.Time
	db     *fuzzDB

	maxElapsed time.Duration
	maxAtt     int
	idem       bool

	// counters into the script, used by the Run's goroutine only
	beginIdx, commitIdx, rollbackIdx, spIdx, progIdx int

	mu            sync.Mutex
	evs           []runEv
	appliedWrites []appliedTx
	bad           []string
	cancelGoid    uint64
	cancelFn      context.CancelCauseFunc
	cbRan         []int
	cbThrown      []any
	nextCb        int

	// how Run ended
	returned  bool
	err       error
	recovered any

	obs []obsEv
}

func (rr *runRec) failf(format string, args ...any) {
	rr.mu.Lock()
	rr.bad = append(rr.bad, fmt.Sprintf(format, args...))
	rr.mu.Unlock()
}

func (rr *runRec) add(kind int, t *tx, err error) {
	rr.mu.Lock()
	rr.evs = append(rr.evs, runEv{kind: kind, t: t, err: err})
	rr.mu.Unlock()
}

func (rr *runRec) cancel(cause error) {
	g := goid()
	rr.mu.Lock()
	if rr.cancelGoid == 0 {
		rr.cancelGoid = g
	}
	fn := rr.cancelFn
	rr.mu.Unlock()
	fn(cause)
}

// cancelledByOwn reports whether the Run's context was ended by the Run's
// goroutine, so that what the Run did afterwards is ordered after it.
func (rr *runRec) cancelledByOwn() bool {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	return rr.cancelGoid != 0 && rr.cancelGoid == rr.goid
}

// ---------------------------------------------------------------------------
// The observer.

type obsEv struct {
	kind    string
	goid    uint64
	attempt int
	err     error
	delay   time.Duration
}

type fuzzObserver struct{}

func (fuzzObserver) rec(ctx context.Context, e obsEv) {
	rr := runOf(ctx)
	if rr == nil {
		return
	}
	e.goid = goid()
	rr.mu.Lock()
	rr.obs = append(rr.obs, e)
	rr.mu.Unlock()
}

func (o fuzzObserver) AttemptStarted(ctx context.Context, e txn.AttemptEvent) {
	o.rec(ctx, obsEv{kind: "attempt", attempt: e.Attempt})
}
func (o fuzzObserver) RetryScheduled(ctx context.Context, e txn.RetryEvent) {
	o.rec(ctx, obsEv{kind: "retry", attempt: e.Attempt, err: e.Err, delay: e.Delay})
}
func (o fuzzObserver) GaveUp(ctx context.Context, e txn.GiveUpEvent) {
	o.rec(ctx, obsEv{kind: "gaveup", attempt: e.Attempts, err: e.Err})
}
func (o fuzzObserver) Committed(ctx context.Context, e txn.CommitEvent) {
	o.rec(ctx, obsEv{kind: "commit", attempt: e.Attempts})
}
func (o fuzzObserver) Admitted(ctx context.Context, e txn.AdmissionEvent) {
	o.rec(ctx, obsEv{kind: "admitted"})
	if e.Wait < 0 {
		runOf(ctx).failf("negative admission wait %v", e.Wait)
	}
}

// ---------------------------------------------------------------------------
// fn.

// level is one transaction or savepoint level of the model of an attempt.
type level struct {
	writes []string
	cbs    []int
}

// fnPanic is what fn panics with.
type fnPanic struct{ run, n int }

// cbPanic is what an OnCommit callback panics with.
type cbPanic struct{ run, cb int }

type attemptState struct {
	rr       *runRec
	r        *txn.Runner[*tx]
	clk      fuzzClock
	t        *tx
	levels   []*level
	poison   error // the first retryable error of a nested level, as the model sees it
	nWrites  int
	spBacked bool
}

func (a *attemptState) top() *level { return a.levels[len(a.levels)-1] }

// exec runs prog at the current level and returns what the level returns.
func (a *attemptState) exec(ctx context.Context, t *tx, prog []op) error {
	rr := a.rr
	for _, o := range prog {
		switch o.kind {
		case opWrite:
			a.nWrites++
			key := fmt.Sprintf("r%d.t%d.w%d", rr.idx, t.id, a.nWrites)
			if rr.db.put(t, key) {
				a.top().writes = append(a.top().writes, key)
			}
		case opOnCommit, opOnCommitPanic:
			rr.mu.Lock()
			rr.nextCb++
			id := rr.nextCb
			rr.mu.Unlock()
			panics := o.kind == opOnCommitPanic
			err := txn.OnCommit(ctx, func() {
				if g := goid(); g != rr.goid {
					rr.failf("callback %d ran on another goroutine", id)
				}
				rr.mu.Lock()
				rr.cbRan = append(rr.cbRan, id)
				rr.mu.Unlock()
				if panics {
					v := &cbPanic{rr.idx, id}
					rr.mu.Lock()
					rr.cbThrown = append(rr.cbThrown, v)
					rr.mu.Unlock()
					panic(v)
				}
			})
			if err != nil {
				rr.failf("OnCommit inside fn: %v", err)
			} else {
				a.top().cbs = append(a.top().cbs, id)
			}
		case opNested, opSavepoint:
			err := a.nested(ctx, o)
			if err != nil && o.propagate {
				return err
			}
		case opCancel:
			rr.cancel(context.Canceled)
		case opAdvance:
			if a.clk.single {
				a.clk.Advance(time.Duration(o.arg) * time.Millisecond)
			}
		case opRetNil:
			return nil
		case opRetRetryable:
			return newErr(txn.ClassRetryable, "fn: serialization failure")
		case opRetPermanent:
			if rr.db.sc.bounded && (t.bounded || t.id%2 == 1) {
				e := newErr(txn.ClassPermanent, "fn: lock timeout")
				e.lockWait = true
				return e
			}
			return newErr(txn.ClassPermanent, "fn: unique violation")
		case opRetRetryMarked:
			e := txn.Retry(newErr(txn.ClassPermanent, "fn: version check failed"))
			rr.db.marks.Store(e, txn.ClassRetryable)
			return e
		case opRetPermanentMarked:
			e := txn.Permanent(newErr(txn.ClassRetryable, "fn: gave up on its own"))
			rr.db.marks.Store(e, txn.ClassPermanent)
			return e
		case opRetTypedNil:
			var e *nilErr
			return e
		case opRetCommitUnknown:
			return fmt.Errorf("inner run: %w: %w", txn.ErrCommitUnknown, newErr(txn.ClassConnLost, "connection reset"))
		case opRetConnLost:
			return newErr(txn.ClassConnLost, "fn: connection reset")
		case opRetAmbiguous:
			return newErr(txn.ClassAmbiguous, "fn: statement outcome unknown")
		case opPanic:
			v := &fnPanic{rr.idx, t.id}
			a.t.panicVal = v
			panic(v)
		case opGoexit:
			runtime.Goexit()
		}
	}
	return nil
}

// nested runs a nested Run or a Savepoint and applies to the model what the
// documentation says of it.
func (a *attemptState) nested(ctx context.Context, o op) error {
	if o.kind == opSavepoint && !a.spBacked {
		err := txn.Savepoint(ctx, func(context.Context, *tx) error {
			a.rr.failf("Savepoint ran its fn on a backend without savepoints")
			return nil
		})
		if !errors.Is(err, txn.ErrSavepointUnsupported) {
			a.rr.failf("Savepoint without savepoints returned %v", safeString(err))
		}
		return err
	}
	lost := a.poison
	ran := false
	a.levels = append(a.levels, &level{})
	body := func(ctx context.Context, t *tx) error {
		ran = true
		if t != a.t {
			a.rr.failf("nested level got tx %d, not %d", t.id, a.t.id)
		}
		return a.exec(ctx, t, o.body)
	}
	var err error
	if o.kind == opNested {
		err = a.r.Run(ctx, body, txn.MaxAttempts(1), txn.Keys("nested"))
	} else {
		err = txn.Savepoint(ctx, body)
	}
	lv := a.levels[len(a.levels)-1]
	a.levels = a.levels[:len(a.levels)-1]
	if lost != nil {
		if ran {
			a.rr.failf("a nested level ran after the attempt was lost to %v", safeString(lost))
		}
		if err != lost {
			a.rr.failf("a nested level after the attempt was lost returned %v, not %v", safeString(err), safeString(lost))
		}
		return err
	}
	if !ran {
		// BEGIN SAVEPOINT failed.
		if err == nil {
			a.rr.failf("a nested level that did not run returned nil")
			return nil
		}
		if classOf(err) != txn.ClassPermanent {
			// Run dooms the attempt with the database's error itself.
			var fe *fErr
			if errors.As(err, &fe) {
				a.setPoison(fe)
			} else {
				a.setPoison(err)
			}
		}
		return err
	}
	if err == nil {
		a.top().writes = append(a.top().writes, lv.writes...)
		a.top().cbs = append(a.top().cbs, lv.cbs...)
		return nil
	}
	c := markedOrClass(&a.rr.db.marks, err)
	if c == txn.ClassPermanent && boundLost(&a.rr.db.marks, a.t, err) {
		// The probe's bound expired: the transaction is lost, as after
		// a conflict in a nested level.
		c = txn.ClassRetryable
	}
	if c != txn.ClassPermanent {
		a.setPoison(err)
	}
	if c == txn.ClassPermanent && !a.spBacked {
		// Joined outright: nothing to undo.
		a.top().writes = append(a.top().writes, lv.writes...)
		a.top().cbs = append(a.top().cbs, lv.cbs...)
	}
	return err
}

func (a *attemptState) setPoison(err error) {
	if a.poison == nil {
		a.poison = err
	}
}

// markedOrClass is the class Run gives err inside a transaction: the mark
// of Retry or Permanent, else the backend's table.
func markedOrClass(marks *sync.Map, err error) txn.Class {
	if c, ok := markOf(marks, err); ok {
		return c
	}
	return classOf(err)
}

// markOf finds the mark of txn.Retry or txn.Permanent on err's chain by
// what those functions are documented to do: Retry(x) is retried,
// Permanent(x) is not. marks holds the values fn built with them.
func markOf(marks *sync.Map, err error) (txn.Class, bool) {
	var found *txn.Class
	walk(err, func(e error) bool {
		if m, ok := marks.Load(e); ok {
			c := m.(txn.Class)
			found = &c
			return true
		}
		return false
	})
	if found == nil {
		return 0, false
	}
	return *found, true
}

// walk calls f on err's chain, depth first, until f returns true.
func walk(err error, f func(error) bool) bool {
	if err == nil {
		return false
	}
	if f(err) {
		return true
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return walk(u.Unwrap(), f)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if walk(e, f) {
				return true
			}
		}
	}
	return false
}

// beforeCommitClass is the class of an attempt's error seen before COMMIT
// (README guarantees 3 and 10): a lost connection or an ambiguous statement
// is retryable there; an unmarked error matching ErrCommitUnknown is never
// retried.
func beforeCommitClass(marks *sync.Map, err error) txn.Class {
	if c, ok := markOf(marks, err); ok {
		if c == txn.ClassPermanent {
			return c
		}
		return txn.ClassRetryable
	}
	if errors.Is(err, txn.ErrCommitUnknown) {
		return txn.ClassPermanent
	}
	switch c := classOf(err); c {
	case txn.ClassConnLost, txn.ClassCommitRetryable, txn.ClassAmbiguous:
		return txn.ClassRetryable
	default:
		return c
	}
}

// isLockWait reports whether err carries a lock wait that reached its
// bound (the fake backend's LockWaitExpired).
func isLockWait(err error) bool {
	var fe *fErr
	return errors.As(err, &fe) && fe != nil && fe.lockWait
}

// boundLost reports whether err, seen in transaction t, loses it to the
// lock-wait bound t began with as a probe: t was begun bounded, err is
// such a wait, fn did not mark it, and it carries no unknown commit.
func boundLost(marks *sync.Map, t *tx, err error) bool {
	if !t.bounded || !isLockWait(err) || errors.Is(err, txn.ErrCommitUnknown) {
		return false
	}
	_, marked := markOf(marks, err)
	return !marked
}

// attemptClass is the class of the error that ended attempt t before
// COMMIT: beforeCommitClass, except that a probe's expired lock-wait bound
// is a conflict.
func attemptClass(marks *sync.Map, t *tx, err error) txn.Class {
	c := beforeCommitClass(marks, err)
	if c == txn.ClassPermanent && boundLost(marks, t, err) {
		return txn.ClassRetryable
	}
	return c
}

// fuzzBounded adds txn.LockWaitBounder to a fake backend.
type fuzzBounded struct{ txn.Backend[*tx] }

func (b fuzzBounded) BeginBoundedWait(ctx context.Context, opts []txn.BeginOption[*tx], wait time.Duration) (*tx, error) {
	if wait <= 0 {
		if rr := runOf(ctx); rr != nil {
			rr.failf("BeginBoundedWait with a bound of %v", wait)
		}
	}
	t, err := b.Backend.Begin(ctx, opts)
	if t != nil {
		t.bounded = true
	}
	return t, err
}

func (b fuzzBounded) LockWaitExpired(err error) bool { return isLockWait(err) }

// fuzzBoundedSP is fuzzBounded over a backend with savepoints.
type fuzzBoundedSP struct {
	fuzzBounded
	sp fuzzSPDB
}

func (b fuzzBoundedSP) BeginSavepoint(ctx context.Context, t *tx, name string) (*tx, error) {
	return b.sp.BeginSavepoint(ctx, t, name)
}

func (b fuzzBoundedSP) ReleaseSavepoint(ctx context.Context, t *tx, name string) error {
	return b.sp.ReleaseSavepoint(ctx, t, name)
}

func (b fuzzBoundedSP) RollbackToSavepoint(ctx context.Context, t *tx, name string) error {
	return b.sp.RollbackToSavepoint(ctx, t, name)
}

// ---------------------------------------------------------------------------
// Running a scenario.

const fuzzRollbackTimeout = time.Second

func (sc *scenario) run(t *testing.T) {
	clk := fuzzClock{Clock: fakeclock.New(time.Unix(1_000_000_000, 0)), single: len(sc.runs) == 1, sc: sc}
	db := &fuzzDB{t: t, sc: sc, rbTO: fuzzRollbackTimeout}
	opts := []txn.RunnerOption{txn.WithClock(clk), txn.Seed(uint64(len(sc.raw))), txn.RollbackTimeout(fuzzRollbackTimeout)}
	switch sc.backoff {
	case 1:
		opts = append(opts, txn.WithBackoff(txn.Constant(3*time.Millisecond)))
	case 2:
		opts = append(opts, txn.WithBackoff(txn.DecorrelatedJitter(time.Millisecond, 20*time.Millisecond)))
	}
	switch sc.adaptive {
	case 1:
		opts = append(opts, txn.NoAdaptive())
	case 2:
		opts = append(opts, txn.Adaptive(1))
	case 3:
		opts = append(opts, txn.Adaptive(2))
	case 4:
		opts = append(opts, txn.StartOpen())
	}
	switch sc.budget {
	case 1:
		opts = append(opts, txn.RetryBudget(0, 0))
	case 2:
		opts = append(opts, txn.RetryBudget(0.5, 1))
	}
	if sc.noReconnect {
		opts = append(opts, txn.NoReconnectBudget())
	}
	if sc.maxAttempts >= 0 {
		opts = append(opts, txn.MaxAttempts(sc.maxAttempts))
	}
	if sc.maxElapsed > 0 {
		opts = append(opts, txn.MaxElapsed(sc.maxElapsed))
	}
	if sc.observer {
		opts = append(opts, txn.WithObserver(fuzzObserver{}))
	}
	var backend txn.Backend[*tx] = db
	if sc.savepoints {
		backend = fuzzSPDB{db}
	}
	if sc.bounded {
		if sc.savepoints {
			backend = fuzzBoundedSP{fuzzBounded{db}, fuzzSPDB{db}}
		} else {
			backend = fuzzBounded{db}
		}
	}
	r := txn.New[*tx](backend, opts...)
	if err := r.Err(); err != nil {
		t.Fatalf("New: %v", err)
	}
	if sc.bounded {
		txn.Contend(r)
	}

	var wg sync.WaitGroup
	recs := make([]*runRec, len(sc.runs))
	var stops []func() bool
	for i, rs := range sc.runs {
		rr := &runRec{idx: i, script: rs, db: db, idem: rs.idempotent, maxElapsed: sc.maxElapsed}
		rr.maxAtt = txn.DefaultMaxAttempts
		if sc.maxAttempts >= 0 {
			rr.maxAtt = sc.maxAttempts
		}
		if rs.maxAtt >= 0 {
			rr.maxAtt = rs.maxAtt
		}
		recs[i] = rr
		base, cancel := context.WithCancelCause(context.Background())
		rr.cancelFn = cancel
		fctx := &fuzzCtx{Context: context.WithValue(base, fuzzRunKey{}, rr)}
		if rs.deadline > 0 {
			fctx.dl = clk.Now().Add(rs.deadline)
			stops = append(stops, clk.AfterFunc(rs.deadline, func() {
				if clk.single {
					rr.cancel(context.DeadlineExceeded)
				} else {
					// With several Runs on the clock, a Run's own sleep
					// can pass its deadline after another Run moved the
					// time: that end is not ordered by the Run.
					rr.cancelFn(context.DeadlineExceeded)
				}
			}))
		}
		var copts []txn.CallOption
		if len(rs.keys) > 0 {
			copts = append(copts, txn.Keys(rs.keys...))
		}
		if rs.idempotent {
			copts = append(copts, txn.Idempotent())
		}
		if rs.maxAtt >= 0 {
			copts = append(copts, txn.MaxAttempts(rs.maxAtt))
		}
		fn := func(ctx context.Context, t *tx) error {
			if got, ok := txn.TxFrom[*tx](ctx); !ok || got != t {
				rr.failf("TxFrom in fn does not return fn's transaction")
			}
			i := rr.progIdx
			rr.progIdx++
			prog := []op{{kind: opWrite}, {kind: opRetNil}}
			if i < len(rr.script.programs) {
				prog = rr.script.programs[i]
			}
			rr.add(evFn, t, nil)
			a := &attemptState{rr: rr, r: r, clk: clk, t: t, levels: []*level{{}}, spBacked: sc.savepoints}
			err := a.exec(ctx, t, prog)
			eff := err
			if a.poison != nil {
				if c, ok := markOf(&db.marks, err); !ok || c != txn.ClassPermanent {
					eff = a.poison
				}
			}
			t.fnReturned = true
			t.model = a.levels[0].writes
			t.modelCbs = a.levels[0].cbs
			t.fnErr = eff
			t.poisoned = a.poison != nil
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rr.goid = goid()
			rr.start = clk.Now()
			defer func() {
				if !rr.returned {
					rr.recovered = recover()
				}
			}()
			rr.err = r.Run(fctx, fn, copts...)
			rr.returned = true
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("Runs hang\nscenario:\n%v\n%s", sc, buf)
	}
	for _, stop := range stops {
		stop()
	}

	var bad []string
	bad = append(bad, db.bad...)
	for _, rr := range recs {
		for _, b := range rr.check(sc) {
			bad = append(bad, fmt.Sprintf("run %d: %s", rr.idx, b))
		}
	}
	st := r.AdmissionStats()
	if st.InFlight != 0 || st.RetryInFlight != 0 || st.Queued != 0 || st.RetryQueued != 0 || st.Keys != 0 {
		bad = append(bad, fmt.Sprintf("admission state left behind: %+v", st))
	}
	if n := clk.Timers(); n != 0 {
		bad = append(bad, fmt.Sprintf("%d fake-clock timers left behind", n))
	}
	if len(bad) > 0 || os.Getenv("FUZZ_TRACE") != "" {
		var trace strings.Builder
		for _, rr := range recs {
			fmt.Fprintf(&trace, "run %d: returned=%v err=%s recovered=%v\n", rr.idx, rr.returned, safeString(rr.err), rr.recovered)
			for _, e := range rr.evs {
				fmt.Fprintf(&trace, "  %s\n", e)
			}
			for _, e := range rr.obs {
				fmt.Fprintf(&trace, "  obs %s attempt=%d delay=%v err=%s\n", e.kind, e.attempt, e.delay, safeString(e.err))
			}
		}
		if len(bad) == 0 {
			t.Logf("scenario:\n%v\ntrace:\n%s", sc, trace.String())
			return
		}
		t.Fatalf("%s\nscenario:\n%v\ntrace:\n%s", strings.Join(bad, "\n"), sc, trace.String())
	}
}

func (e runEv) String() string {
	names := [...]string{"begin", "begin-fail", "fn", "commit", "rollback", "sleep"}
	s := names[e.kind]
	if e.t != nil {
		s += fmt.Sprintf(" tx%d", e.t.id)
		if e.kind == evCommit {
			s += " " + commitNames[e.t.lastCommit]
		}
		if e.kind == evFn && e.t.fnReturned {
			s += fmt.Sprintf(" -> %s (poisoned=%v) writes=%v cbs=%v", safeString(e.t.fnErr), e.t.poisoned, e.t.model, e.t.modelCbs)
		}
	}
	if e.err != nil {
		s += ": " + safeString(e.err)
	}
	return s
}

// try is one BEGIN of a Run and what followed it.
type try struct {
	beginErr error
	t        *tx
}

// outcome kinds of a try.
const (
	okRetry       = iota // Run may try again
	okStop               // Run must stop with an error
	okCommitted          // the commit succeeded: Run returns nil
	okAmbiguous          // the commit's outcome is unknown
	okUnknownStop        // commit re-sends stopped: outcome unknown
	okAbandoned          // fn panicked or exited
	okCtxDone            // fn returned nil, the context had ended: no commit
)

func (rr *runRec) check(sc *scenario) (bad []string) {
	failf := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	bad = append(bad, rr.bad...)
	marks := &rr.db.marks

	var tries []try
	fnRuns, sleepsOK, resends := 0, 0, 0
	for _, e := range rr.evs {
		switch e.kind {
		case evBegin:
			tries = append(tries, try{t: e.t})
		case evBeginFail:
			tries = append(tries, try{beginErr: e.err})
		case evFn:
			fnRuns++
		case evSleep:
			if e.err == nil {
				sleepsOK++
			}
		}
	}
	begun := 0
	for _, tr := range tries {
		if tr.t != nil {
			begun++
			if tr.t.commits > 1 {
				resends += tr.t.commits - 1
			}
		}
	}
	if fnRuns != begun {
		failf("fn ran %d times for %d transactions begun", fnRuns, begun)
	}
	if rr.maxAtt > 0 && len(tries) > rr.maxAtt {
		failf("%d tries, MaxAttempts %d", len(tries), rr.maxAtt)
	}

	// Every transaction ends once.
	for _, tr := range tries {
		t := tr.t
		if t == nil {
			continue
		}
		switch {
		case t.rbs == 0 && t.commits == 0:
			failf("tx %d was neither committed nor rolled back", t.id)
		case t.rbs > 0 && t.commits > 0, t.rbs > 1:
			failf("tx %d: %d ROLLBACKs and %d COMMITs", t.id, t.rbs, t.commits)
		}
		if rr.maxAtt > 0 && t.commits > rr.maxAtt {
			failf("tx %d: %d COMMITs sent, MaxAttempts %d", t.id, t.commits, rr.maxAtt)
		}
		if t.commits > 0 && (!t.fnReturned || t.fnErr != nil) {
			failf("tx %d committed though fn returned %s (poisoned=%v, returned=%v)", t.id, safeString(t.fnErr), t.poisoned, t.fnReturned)
		}
		if t.applied > 1 {
			failf("tx %d applied %d times", t.id, t.applied)
		}
	}

	// A probe's lock-wait bound costs a Run one attempt at most, and is
	// never set on its last attempt.
	spent := false
	for i, tr := range tries {
		t := tr.t
		if t == nil || !t.bounded {
			continue
		}
		if !sc.bounded {
			failf("tx %d began bounded on a backend that cannot bound", t.id)
		}
		if spent {
			failf("tx %d began bounded after the Run lost an attempt to the bound", t.id)
		}
		if rr.maxAtt > 0 && i+1 >= rr.maxAtt {
			failf("tx %d began bounded as try %d of MaxAttempts %d", t.id, i+1, rr.maxAtt)
		}
		if t.fnReturned && t.fnErr != nil && boundLost(marks, t, t.fnErr) {
			spent = true
		}
		if sc.probes != nil {
			sc.probes[0]++
			if spent {
				sc.probes[1]++
			}
		}
	}

	// What each try allowed next.
	anyAmbiguous := false
	outcomeOf := func(tr try) (int, error) {
		if tr.beginErr != nil {
			if beforeCommitClass(marks, tr.beginErr) == txn.ClassPermanent {
				return okStop, tr.beginErr
			}
			return okRetry, tr.beginErr
		}
		t := tr.t
		switch {
		case !t.fnReturned:
			return okAbandoned, nil
		case t.fnErr != nil:
			if attemptClass(marks, t, t.fnErr) == txn.ClassPermanent {
				return okStop, t.fnErr
			}
			return okRetry, t.fnErr
		case t.commits == 0:
			return okCtxDone, nil
		}
		switch t.lastCommit {
		case commitOK:
			return okCommitted, nil
		case commitRetryable:
			return okRetry, t.commitErr
		case commitPermanent:
			return okStop, t.commitErr
		case commitResend:
			return okUnknownStop, t.commitErr
		default:
			return okAmbiguous, t.commitErr
		}
	}
	var committed *tx
	for i, tr := range tries {
		k, err := outcomeOf(tr)
		if k == okAmbiguous || k == okUnknownStop {
			anyAmbiguous = true
		}
		if k == okCommitted {
			committed = tr.t
		}
		if i == len(tries)-1 {
			break
		}
		switch {
		case k == okRetry:
		case k == okAmbiguous && rr.idem:
		default:
			failf("try %d ended with outcome %d (%s), and Run tried again", i, k, safeString(err))
		}
	}

	// Writes: those of the attempt that committed, and of attempts whose
	// COMMIT reply was lost.
	var applied []*tx
	for _, a := range rr.appliedWrites {
		applied = append(applied, a.t)
		if !slices.Equal(a.writes, a.t.model) {
			failf("tx %d committed writes %v, fn left %v", a.t.id, a.writes, a.t.model)
		}
		if a.t != committed && !(a.t.lastCommit == commitLostApplied || a.t.lastCommit == commitAmbigApplied || a.t.lastCommit == commitCancelApplied) {
			failf("tx %d applied but its commit answered %s", a.t.id, commitNames[a.t.lastCommit])
		}
	}
	if len(applied) > 1 && !rr.idem {
		failf("%d attempts committed in one Run that is not Idempotent", len(applied))
	}

	// How the Run ended.
	var last try
	lastKind, lastErr := -1, error(nil)
	if len(tries) > 0 {
		last = tries[len(tries)-1]
		lastKind, lastErr = outcomeOf(last)
	}
	cbPanicked := false
	if !rr.returned {
		switch {
		case lastKind == okAbandoned && last.t.panicVal != nil:
			if rr.recovered != last.t.panicVal {
				failf("fn panicked with %v, Run's caller got %v", last.t.panicVal, rr.recovered)
			}
		case lastKind == okAbandoned:
			if rr.recovered != nil {
				failf("fn exited its goroutine, Run's caller recovered %v", rr.recovered)
			}
		case lastKind == okCommitted && len(rr.cbThrown) > 0:
			cbPanicked = true
			if !slices.Contains(rr.cbThrown, rr.recovered) {
				failf("callbacks panicked with %v, Run's caller got %v", rr.cbThrown, rr.recovered)
			}
		default:
			failf("Run did not return (recovered %v) after outcome %d", rr.recovered, lastKind)
		}
	} else {
		err := rr.err
		isCtx := errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
		var gu *txn.GiveUpError
		isGU := errors.As(err, &gu)
		if isGU && gu.Attempts != fnRuns {
			failf("GiveUpError.Attempts %d, fn ran %d times", gu.Attempts, fnRuns)
		}
		switch {
		case err == nil:
			if lastKind != okCommitted {
				failf("Run returned nil, but its last try ended with outcome %d (%s)", lastKind, safeString(lastErr))
			}
		case len(tries) == 0:
			if !isCtx {
				failf("Run tried nothing and returned %s", safeString(err))
			}
		case lastKind == okCommitted:
			failf("the last commit succeeded and Run returned %s", safeString(err))
		case lastKind == okAbandoned:
			failf("fn panicked or exited and Run returned %s", safeString(err))
		case lastKind == okCtxDone:
			if !isCtx {
				failf("fn returned nil after the context ended; Run returned %s, not the context's error", safeString(err))
			}
		case lastKind == okAmbiguous, lastKind == okUnknownStop:
			if !errors.Is(err, txn.ErrCommitUnknown) {
				failf("the last commit's outcome is unknown and Run returned %s", safeString(err))
			}
		case lastKind == okStop:
			if !errors.Is(err, lastErr) {
				failf("the last try failed permanently with %s and Run returned %s", safeString(lastErr), safeString(err))
			}
		case lastKind == okRetry:
			if !isGU || !errors.Is(err, lastErr) {
				failf("the last try failed with retryable %s and Run returned %s, not a GiveUpError wrapping it", safeString(lastErr), safeString(err))
			}
		}
		if err != nil && anyAmbiguous && !errors.Is(err, txn.ErrCommitUnknown) {
			failf("a commit's outcome was unknown and Run returned %s, which does not say so", safeString(err))
		}
		// Every try after the first, and every COMMIT re-send, follows a
		// backoff sleep; a sleep not followed by one ended in a failed
		// admission, which only the context causes.
		after := len(tries) + resends - 1
		if len(tries) == 0 {
			after = 0
		}
		switch d := sleepsOK - after; {
		case d == 0:
		case d == 1 && isCtx:
		default:
			failf("%d backoff sleeps for %d tries and %d COMMIT re-sends", sleepsOK, len(tries), resends)
		}
	}

	// OnCommit callbacks.
	var want []int
	if (rr.returned && rr.err == nil) || cbPanicked {
		if committed != nil {
			want = committed.modelCbs
		}
	}
	if !slices.Equal(rr.cbRan, want) {
		failf("OnCommit callbacks ran %v, want %v", rr.cbRan, want)
	}

	// Observer.
	if sc.observer {
		n, terminals := 0, 0
		retries := 0
		for i, e := range rr.obs {
			if e.goid != rr.goid {
				failf("observer event %s on another goroutine", e.kind)
			}
			if terminals > 0 {
				failf("observer event %s after the terminal event", e.kind)
			}
			switch e.kind {
			case "attempt":
				n++
				if e.attempt != n {
					failf("attempt event %d numbered %d", n, e.attempt)
				}
			case "retry":
				retries++
				if e.delay < 0 || e.err == nil {
					failf("retry event with delay %v, error %v", e.delay, safeString(e.err))
				}
			case "commit", "gaveup":
				terminals++
				if e.attempt != fnRuns {
					failf("%s event counts %d attempts, fn ran %d times", e.kind, e.attempt, fnRuns)
				}
				if e.kind == "commit" && !(rr.returned && rr.err == nil) && !cbPanicked {
					failf("commit event, but Run returned %s", safeString(rr.err))
				}
				if e.kind == "gaveup" && (!rr.returned || e.err != rr.err) {
					failf("gave-up event %d carries %s, Run returned %s", i, safeString(e.err), safeString(rr.err))
				}
			}
		}
		if n != fnRuns {
			failf("%d attempt events, fn ran %d times", n, fnRuns)
		}
		sleeps := 0
		for _, e := range rr.evs {
			if e.kind == evSleep {
				sleeps++
			}
		}
		if retries != sleeps {
			failf("%d retry events, %d backoff sleeps", retries, sleeps)
		}
		switch {
		case rr.returned || cbPanicked:
			if terminals != 1 {
				failf("%d terminal events for a Run that returned", terminals)
			}
		default:
			if terminals != 0 {
				failf("%d terminal events for a Run whose fn panicked or exited", terminals)
			}
		}
	}
	return bad
}
