package chaostest

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/faultproxy"
)

// chaosRuns is how many Runs each backend is offered under cuts; CI runs
// all of them (the issue asks for at least 5 000).
const chaosRuns = 5000

// bankFactory builds a bank named name whose Runner connects to addr.
type bankFactory func(t *testing.T, addr, name string, conns int, opts ...txn.RunnerOption) *bank

// backends returns the real servers under test and their addresses.
func backends() map[string]func(t *testing.T) (string, bankFactory) {
	return map[string]func(t *testing.T) (string, bankFactory){
		"PostgreSQL": func(t *testing.T) (string, bankFactory) {
			cfg := pgConfig(t)
			return pgAddr(cfg), func(t *testing.T, addr, name string, conns int, opts ...txn.RunnerOption) *bank {
				b, _ := pgBank(t, cfg, addr, "pg_"+name, conns, opts...)
				return b
			}
		},
		"MariaDB": func(t *testing.T) (string, bankFactory) {
			cfg := mysqlConfig(t)
			return cfg.Addr, func(t *testing.T, addr, name string, conns int, opts ...txn.RunnerOption) *bank {
				b, _ := mysqlBank(t, cfg, addr, "my_"+name, conns, opts...)
				return b
			}
		},
	}
}

// TestChaosCuts runs the bank workload with the default Runner (but for
// RollbackTimeout) through a proxy that cuts connections at random: while
// connecting, during statements and at COMMIT (before it reaches the server,
// or after the server committed and answered). Then it reconciles: nothing
// lost, nothing doubled, every unknown outcome is ErrCommitUnknown and
// matches a COMMIT the proxy cut.
func TestChaosCuts(t *testing.T) {
	for _, name := range []string{"PostgreSQL", "MariaDB"} {
		t.Run(name, func(t *testing.T) { chaosCuts(t, name, chaosRuns, false) })
	}
}

// TestChaosCutsDatabaseKeys is TestChaosCuts with txn.DatabaseKeys, every
// transfer naming its two accounts: the locks taken on the connection
// before BEGIN (PostgreSQL advisory locks, MariaDB named locks) are cut
// too, while they are requested, granted or released.
func TestChaosCutsDatabaseKeys(t *testing.T) {
	for _, name := range []string{"PostgreSQL", "MariaDB"} {
		t.Run(name, func(t *testing.T) { chaosCuts(t, name, chaosRuns/2, true) })
	}
}

// chaosCuts offers runs transfers to the named backend through a proxy
// that cuts at random, and reconciles.
func chaosCuts(t *testing.T, name string, runs int, keyed bool) {
	target, build := backends()[name](t)
	p, err := faultproxy.Start(target)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	l := load{runs: runs, workers: 16, timeout: 5 * time.Second, rollbackTimeout: time.Second, refuse: 0.05}
	opts := []txn.RunnerOption{txn.RollbackTimeout(l.rollbackTimeout)}
	bankName := "cuts"
	if keyed {
		opts, bankName = append(opts, txn.DatabaseKeys()), "cutskeys"
	}
	b := build(t, p.Addr(), bankName, l.workers, opts...)
	b.keyed = keyed
	p.SetChaos(faultproxy.Chaos{Seed: 17, Connect: 0.05, Statement: 0.01, Commit: 0.03})
	start := time.Now()
	results := offer(t, b, l, 1)
	wall := time.Since(start)
	st := p.ChaosStats()
	p.SetChaos(faultproxy.Chaos{})
	s := reconcile(t, b, l, results)
	what := name
	if keyed {
		what += " with DatabaseKeys"
	}
	figure(t, "%s through cuts: %v in %v", what, s, wall.Round(time.Millisecond))
	figure(t, "%s faults: %d connects cut, %d statements cut, %d COMMITs cut (%d after the server answered); failures: %s",
		what, st.ConnectCuts, st.StatementCuts, st.CommitCuts, st.CommitsCutAfterReply, kinds(s.errs))
	assert.Equal(t, runs, s.offered)
	// Every cut COMMIT is an unknown outcome. A statement cut "after
	// the reply" can also land on a COMMIT: the proxy cuts at the
	// next bytes the server sends, and a request that has no reply
	// (MySQL's COM_STMT_CLOSE) passes the cut on to the next one.
	assert.GreaterOrEqual(t, s.unknown, st.CommitCuts, "every cut COMMIT is an unknown outcome")
	assert.LessOrEqual(t, s.unknown, st.CommitCuts+st.StatementCuts, "an unknown outcome needs a cut")
	assert.GreaterOrEqual(t, s.unknownCommitted, st.CommitsCutAfterReply, "the COMMITs the server answered committed")
	assert.LessOrEqual(t, s.unknownCommitted, s.unknown-(st.CommitCuts-st.CommitsCutAfterReply),
		"the COMMITs cut before they reached the server did not commit")
	assert.Greater(t, s.committed, runs/2, "most transfers commit despite the faults")
}

// TestChaosStalls is TestChaosCuts with a proxy that goes silent, keeping
// the connection open, at a statement, at COMMIT and at ROLLBACK: every Run
// must still return by its deadline plus RollbackTimeout.
func TestChaosStalls(t *testing.T) {
	for _, name := range []string{"PostgreSQL", "MariaDB"} {
		t.Run(name, func(t *testing.T) {
			target, build := backends()[name](t)
			p, err := faultproxy.Start(target)
			require.NoError(t, err)
			t.Cleanup(func() { _ = p.Close() })
			// At least stallRuns Runs, and more (up to three times as many)
			// until each kind of stall has happened: how many COMMITs a
			// run reaches depends on how long earlier stalls held their
			// locks, and on MariaDB it can be under a hundred.
			const stallRuns = 400
			offered := 0
			l := load{runs: 3 * stallRuns, workers: 16, timeout: time.Second, rollbackTimeout: 500 * time.Millisecond, refuse: 0.2,
				until: func() bool { // called under offer's lock, once per Run taken
					st := p.ChaosStats()
					if offered >= stallRuns && st.StatementStalls > 0 && st.CommitStalls > 0 && st.RollbackStalls > 0 {
						return true
					}
					offered++
					return false
				}}
			b := build(t, p.Addr(), "stalls", l.workers, txn.RollbackTimeout(l.rollbackTimeout))
			// StallFor is only a backstop so that a Run stuck past its
			// bound ends the test instead of hanging it.
			p.SetChaos(faultproxy.Chaos{Seed: 29, StatementStall: 0.005, CommitStall: 0.03, RollbackStall: 0.3, StallFor: 5 * time.Second})
			start := time.Now()
			results := offer(t, b, l, 2)
			wall := time.Since(start)
			st := p.ChaosStats()
			p.SetChaos(faultproxy.Chaos{})
			s := reconcile(t, b, l, results)
			figure(t, "%s through stalls: %v in %v", name, s, wall.Round(time.Millisecond))
			figure(t, "%s stalls: %d statements, %d COMMITs, %d ROLLBACKs; failures: %s",
				name, st.StatementStalls, st.CommitStalls, st.RollbackStalls, kinds(s.errs))
			assert.Positive(t, st.StatementStalls)
			assert.Positive(t, st.CommitStalls)
			assert.Positive(t, st.RollbackStalls)
		})
	}
}

// kinds formats error counts, most frequent first.
func kinds(m map[string]int) string {
	type kv struct {
		k string
		v int
	}
	var l []kv
	for k, v := range m {
		l = append(l, kv{k, v})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v || l[i].v == l[j].v && l[i].k < l[j].k })
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d %s", e.v, e.k)
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}
