package txn_test

// seedBuilder writes fuzz inputs in the layout decodeScenario reads, so
// that the seeds of FuzzRun say what they do.
type seedBuilder struct{ b []byte }

// scenarioOpts are the Runner-wide choices of a seed.
type scenarioOpts struct {
	savepoints, observer, noReconnect bool
	runs                              int // 1..3
	adaptive                          int // 0 default, 1 NoAdaptive, 2 Adaptive(1), 3 Adaptive(2), 4 StartOpen
	budget                            int // 0 none, 1 RetryBudget(0,0), 2 RetryBudget(0.5,1)
	maxAttempts                       int // -1 default, else the limit (0: none)
	maxElapsed                        int // 0 none, else e: e*e ms
	backoff                           int // 0 default, 1 Constant(3ms), 2 DecorrelatedJitter(1ms, 20ms)
}

func newSeed(o scenarioOpts) *seedBuilder {
	h := byte(0)
	if o.savepoints {
		h |= 1
	}
	if o.observer {
		h |= 2
	}
	if o.noReconnect {
		h |= 4
	}
	h |= byte((o.runs-1)%3) << 3
	sb := &seedBuilder{b: []byte{h, byte(o.adaptive), byte(o.budget), byte(o.maxAttempts + 1), byte(o.maxElapsed), byte(o.backoff)}}
	return sb
}

// run starts the script of one Run: keyset 0 none, 1 {a}, 2 {b}, 3 {a,b};
// deadline d: 2·d² ms of fake time (0: none); maxAtt -1: the Runner's.
func (s *seedBuilder) run(idempotent bool, keyset, deadline, maxAtt, tries int) *seedBuilder {
	b := byte(keyset<<1 | deadline<<3)
	if idempotent {
		b |= 1
	}
	s.b = append(s.b, b, byte(maxAtt+1), byte(tries))
	return s
}

// Begin outcomes for try.
const (
	sBeginOK        = 0
	sBeginRetryable = 3
	sBeginConnLost  = 4
	sBeginPermanent = 5
	sBeginAmbiguous = 6
)

// Savepoint outcomes for try.
const (
	sSpOK        = 0
	sSpRetryable = 3
	sSpPermanent = 4
)

// try adds one try: BEGIN's outcome, fn's program (built with prog), the
// COMMIT's outcome (commitOK, ...), whether ROLLBACK fails, and the
// outcome of the try's first BEGIN SAVEPOINT.
func (s *seedBuilder) try(begin int, program []byte, commit int, rollbackFails bool, sp int) *seedBuilder {
	s.b = append(s.b, byte(begin))
	if program == nil {
		program = prog()
	}
	s.b = append(s.b, program...)
	rb := byte(1)
	if rollbackFails {
		rb = 0
	}
	s.b = append(s.b, byte(commit), rb, byte(sp))
	return s
}

func (s *seedBuilder) bytes() []byte { return s.b }

// prog encodes a program of ops; nested and savepoint ops take their
// propagate flag and body from nest.
func prog(ops ...[]byte) []byte {
	out := []byte{byte(len(ops))}
	for _, o := range ops {
		out = append(out, o...)
	}
	return out
}

func o(kind int) []byte { return []byte{byte(kind)} }

func advance(ms int) []byte { return []byte{opAdvance, byte(ms)} }

func nest(kind int, propagate bool, body []byte) []byte {
	p := byte(0)
	if propagate {
		p = 1
	}
	return append([]byte{byte(kind), p}, body...)
}

// fuzzSeeds are FuzzRun's seed corpus: each guarantee's main paths.
func fuzzSeeds() [][]byte {
	one := scenarioOpts{runs: 1, maxAttempts: -1, observer: true}
	sp := one
	sp.savepoints = true
	okFn := prog(o(opWrite), o(opOnCommit), o(opRetNil))
	seeds := [][]byte{
		// Commits at once.
		newSeed(one).run(false, 0, 0, -1, 1).try(sBeginOK, okFn, commitOK, false, sSpOK).bytes(),
		// Conflict, then success.
		newSeed(one).run(false, 1, 0, -1, 2).
			try(sBeginOK, prog(o(opWrite), o(opOnCommit), o(opRetRetryable)), commitOK, false, sSpOK).
			try(sBeginOK, okFn, commitOK, false, sSpOK).bytes(),
		// Permanent error, Retry and Permanent marks, typed nil.
		newSeed(one).run(false, 0, 0, -1, 3).
			try(sBeginOK, prog(o(opWrite), o(opRetRetryMarked)), commitOK, true, sSpOK).
			try(sBeginOK, prog(o(opWrite), o(opRetConnLost)), commitOK, false, sSpOK).
			try(sBeginOK, prog(o(opWrite), o(opRetTypedNil)), commitOK, false, sSpOK).bytes(),
		newSeed(one).run(false, 0, 0, -1, 1).try(sBeginOK, prog(o(opRetPermanentMarked)), commitOK, false, sSpOK).bytes(),
		newSeed(one).run(false, 0, 0, -1, 1).try(sBeginOK, prog(o(opRetCommitUnknown)), commitOK, false, sSpOK).bytes(),
		// Commit lost after it applied: not re-run; Idempotent: re-run.
		newSeed(one).run(false, 0, 0, -1, 2).try(sBeginOK, okFn, commitLostApplied, false, sSpOK).try(sBeginOK, okFn, commitOK, false, sSpOK).bytes(),
		newSeed(one).run(true, 0, 0, -1, 3).
			try(sBeginOK, okFn, commitAmbigApplied, false, sSpOK).
			try(sBeginOK, okFn, commitLostNotApplied, false, sSpOK).
			try(sBeginOK, prog(o(opRetPermanent)), commitOK, false, sSpOK).bytes(),
		// Commit-retryable re-sends, up to the limit.
		newSeed(one).run(false, 0, 0, 2, 3).
			try(sBeginOK, okFn, commitResend, false, sSpOK).
			try(sBeginOK, okFn, commitResend, false, sSpOK).
			try(sBeginOK, okFn, commitOK, false, sSpOK).bytes(),
		// The context ends during COMMIT.
		newSeed(one).run(false, 0, 0, -1, 1).try(sBeginOK, okFn, commitCancelApplied, false, sSpOK).bytes(),
		// BEGIN fails: retryable, connection refused, permanent.
		newSeed(scenarioOpts{runs: 1, maxAttempts: 3, observer: true}).run(false, 0, 0, -1, 4).
			try(sBeginConnLost, nil, commitOK, false, sSpOK).
			try(sBeginRetryable, nil, commitOK, false, sSpOK).
			try(sBeginAmbiguous, nil, commitOK, false, sSpOK).
			try(sBeginPermanent, nil, commitOK, false, sSpOK).bytes(),
		// fn cancels its context, then returns nil.
		newSeed(one).run(false, 0, 0, -1, 1).try(sBeginOK, prog(o(opWrite), o(opCancel), o(opRetNil)), commitOK, false, sSpOK).bytes(),
		// fn takes longer than the deadline, then conflicts.
		newSeed(one).run(false, 0, 2, -1, 2).
			try(sBeginOK, prog(o(opWrite), advance(7), o(opRetRetryable)), commitOK, false, sSpOK).
			try(sBeginOK, prog(o(opWrite), advance(30), o(opRetRetryable)), commitOK, false, sSpOK).bytes(),
		// MaxElapsed stops the retries.
		newSeed(scenarioOpts{runs: 1, maxAttempts: 0, maxElapsed: 2, backoff: 1, observer: true}).run(false, 0, 0, -1, 3).
			try(sBeginOK, prog(o(opRetRetryable)), commitOK, false, sSpOK).
			try(sBeginOK, prog(o(opRetRetryable)), commitOK, false, sSpOK).
			try(sBeginOK, prog(o(opRetRetryable)), commitOK, false, sSpOK).bytes(),
		// Retry budget exhausted.
		newSeed(scenarioOpts{runs: 1, maxAttempts: -1, budget: 1, observer: true}).run(false, 0, 0, -1, 1).
			try(sBeginOK, prog(o(opRetRetryable)), commitOK, false, sSpOK).bytes(),
		// Panic and Goexit, with callbacks registered.
		newSeed(sp).run(true, 1, 0, -1, 1).try(sBeginOK, prog(o(opWrite), o(opOnCommit), o(opPanic)), commitOK, false, sSpOK).bytes(),
		newSeed(sp).run(true, 1, 0, -1, 1).try(sBeginOK, prog(o(opWrite), o(opOnCommit), o(opGoexit)), commitOK, true, sSpOK).bytes(),
		// Callbacks, one of which panics.
		newSeed(one).run(false, 0, 0, -1, 1).try(sBeginOK, prog(o(opOnCommit), o(opOnCommitPanic), o(opOnCommit), o(opOnCommitPanic)), commitOK, false, sSpOK).bytes(),
		// Savepoints: a nested Run that fails permanently is undone, one
		// that commits is kept; a retryable one dooms the attempt.
		newSeed(sp).run(false, 0, 0, -1, 2).
			try(sBeginOK, prog(o(opWrite), o(opOnCommit),
				nest(opNested, false, prog(o(opWrite), o(opOnCommit), o(opRetPermanent))),
				nest(opSavepoint, false, prog(o(opWrite), o(opOnCommit), o(opRetNil))),
				nest(opNested, false, prog(o(opWrite), o(opRetRetryable))),
				o(opRetNil)), commitOK, false, sSpOK).
			try(sBeginOK, prog(o(opWrite),
				nest(opSavepoint, false, prog(o(opWrite), nest(opNested, true, prog(o(opWrite), o(opOnCommit), o(opRetPermanent))), o(opRetNil))),
				o(opRetNil)), commitOK, false, sSpOK).bytes(),
		// BEGIN SAVEPOINT fails, retryable then permanent.
		newSeed(sp).run(false, 0, 0, -1, 2).
			try(sBeginOK, prog(o(opWrite), nest(opSavepoint, false, prog(o(opWrite))), o(opWrite), o(opRetNil)), commitOK, false, sSpRetryable).
			try(sBeginOK, prog(o(opWrite), nest(opNested, false, prog(o(opWrite))), o(opRetNil)), commitOK, false, sSpPermanent).bytes(),
		// Without savepoints: a nested Run joins; Savepoint is refused.
		newSeed(one).run(false, 0, 0, -1, 2).
			try(sBeginOK, prog(o(opWrite), nest(opNested, false, prog(o(opWrite), o(opOnCommit), o(opRetPermanent))),
				nest(opSavepoint, false, prog(o(opWrite))), nest(opNested, true, prog(o(opRetRetryable)))), commitOK, false, sSpOK).
			try(sBeginOK, prog(o(opWrite), nest(opNested, false, prog(o(opWrite), o(opOnCommit), o(opRetPermanent))), o(opRetNil)), commitOK, false, sSpOK).bytes(),
		// A nested panic.
		newSeed(sp).run(false, 0, 0, -1, 1).try(sBeginOK, prog(o(opWrite), nest(opNested, true, prog(o(opWrite), o(opPanic)))), commitOK, false, sSpOK).bytes(),
	}
	// Concurrent Runs on shared keys and a limit of one.
	conc := scenarioOpts{runs: 3, maxAttempts: -1, adaptive: 2, observer: true, savepoints: true, budget: 2}
	cs := newSeed(conc)
	for i := range 3 {
		cs.run(i == 1, 1+i%3, 0, -1, 3).
			try(sBeginOK, prog(o(opWrite), o(opOnCommit), o(opRetRetryable)), commitOK, false, sSpOK).
			try(sBeginConnLost, nil, commitOK, false, sSpOK).
			try(sBeginOK, okFn, commitRetryable, false, sSpOK)
	}
	seeds = append(seeds, cs.bytes())
	conc.adaptive = 0
	conc.savepoints = false
	cs = newSeed(conc)
	for i := range 3 {
		cs.run(false, 3, 3, 4, 2).
			try(sBeginOK, prog(o(opWrite), o(opRetRetryable)), commitOK, false, sSpOK).
			try(sBeginOK, prog(o(opWrite), o(opCancel), o(opRetNil)), commitLostApplied, false, sSpOK)
		_ = i
	}
	seeds = append(seeds, cs.bytes())
	return seeds
}
