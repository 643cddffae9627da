package chaostest

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/txnkit/txn"
)

// restartable is a private server and the banks built on it.
type restartable struct {
	srv   *server
	build func(t *testing.T, name string, conns int) *bank
}

func restartables() map[string]func(t *testing.T) restartable {
	return map[string]func(t *testing.T) restartable{
		"PostgreSQL": func(t *testing.T) restartable {
			srv, cfg := startPostgres(t)
			return restartable{srv, func(t *testing.T, name string, conns int) *bank {
				b, _ := pgBank(t, cfg, pgAddr(cfg), "pg_"+name, conns)
				return b
			}}
		},
		"MariaDB": func(t *testing.T) restartable {
			srv, cfg := startMariaDB(t)
			return restartable{srv, func(t *testing.T, name string, conns int) *bank {
				b, _ := mysqlBank(t, cfg, cfg.Addr, "my_"+name, conns)
				return b
			}}
		},
	}
}

// TestRestarts starts a private server, runs the bank workload on it with
// a default Runner, restarts the server twice under that load, and checks
// the ledger as TestChaosCuts does. It prints how long Runs failed around
// each restart and, after the restarts, compares the goodput of the same
// Runner with a fresh one's, in alternating rounds.
func TestRestarts(t *testing.T) {
	for _, name := range []string{"PostgreSQL", "MariaDB"} {
		t.Run(name, func(t *testing.T) {
			rs := restartables()[name](t)
			const workers = 8
			b := rs.build(t, "restart", workers)
			var stop atomic.Bool
			l := load{runs: 1 << 30, workers: workers, timeout: 2 * time.Second,
				rollbackTimeout: txn.DefaultRollbackTimeout, until: stop.Load}
			type window struct{ down, up time.Time }
			var windows []window
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer stop.Store(true)
				for i := 0; i < 2; i++ {
					time.Sleep(1500 * time.Millisecond)
					sig := time.Now()
					_, up := rs.srv.restart()
					windows = append(windows, window{sig, up})
				}
				time.Sleep(1500 * time.Millisecond)
			}()
			results := offer(t, b, l, 3)
			wg.Wait()
			s := reconcile(t, b, l, results)
			figure(t, "%s restarted twice under load: %v", name, s)
			for i, w := range windows {
				var firstFail, lastFail, recovered time.Time
				fails := 0
				errs := map[string]int{}
				for _, r := range results {
					end := r.start.Add(r.elapsed)
					// A Run belongs to the restart it overlaps; one that
					// overlaps the next restart belongs to that one.
					if end.Before(w.down) || (i+1 < len(windows) && end.After(windows[i+1].down)) {
						continue
					}
					if r.out == failed && (errors.Is(r.err, errInsufficient) || errors.Is(r.err, errRefused)) {
						continue // fn's own refusals happen all along
					}
					if r.out != committed {
						fails++
						if r.out == unknown {
							errs["commit unknown"]++
						} else {
							errs[errKind(r.err)]++
						}
						if firstFail.IsZero() || r.start.Before(firstFail) {
							firstFail = r.start
						}
						if end.After(lastFail) {
							lastFail = end
						}
					} else if r.start.After(w.up) && (recovered.IsZero() || end.Before(recovered)) {
						recovered = end
					}
				}
				assert.False(t, recovered.IsZero(), "restart %d: a Run committed after the server came back", i+1)
				figure(t, "%s restart %d: server down %v; Runs failed during %v (%d Runs); first commit %v after the server was back; failures: %s",
					name, i+1, w.up.Sub(w.down).Round(time.Millisecond), lastFail.Sub(firstFail).Round(time.Millisecond), fails,
					recovered.Sub(w.up).Round(time.Millisecond), kinds(errs))
			}

			// Goodput: the Runner that lived through the restarts against a
			// fresh one, each on its own tables, in alternating rounds.
			limitAfter := b.limit()
			fresh := rs.build(t, "fresh", workers)
			var same, other int
			round := func(b *bank) int {
				end := time.Now().Add(goodputRound)
				n := 0
				for _, r := range offer(t, b, load{runs: 1 << 30, workers: workers, timeout: 2 * time.Second,
					rollbackTimeout: txn.DefaultRollbackTimeout, until: func() bool { return time.Now().After(end) }}, 4) {
					if r.out == committed {
						n++
					}
				}
				return n
			}
			for i := 0; i < goodputRounds; i++ {
				// Pairs of adjacent rounds, each Runner first in turn, so
				// that a burst of load elsewhere on the machine hits both.
				if i%2 == 0 {
					same += round(b)
					other += round(fresh)
				} else {
					other += round(fresh)
					same += round(b)
				}
			}
			ratio := float64(same) / float64(other)
			figure(t, "%s goodput after the restarts: same Runner %d commits, fresh Runner %d, in %d pairs of %v rounds with %d workers: ratio %.2f (adaptive limit after the restarts %d, fresh %d)",
				name, same, other, goodputRounds, goodputRound, workers, ratio, limitAfter, fresh.limit())
			assert.GreaterOrEqual(t, ratio, goodputFloor, "the Runner that lived through the restarts works about as well as a fresh one")
		})
	}
}

// The goodput comparison: goodputRounds pairs of rounds of goodputRound,
// one round of each Runner. The same Runner must reach goodputFloor of the
// fresh one's commits. The aim is 10 %, but on the shared 2-core machine
// that runs CI, where other packages' tests run at the same time, the ratio
// of two Runners in the same state (same adaptive limit, printed) swung
// from 0.68 to 1.23 between runs; so the assertion allows 30 % and the
// figure is printed. What it catches is a Runner left crippled by the
// outage: before connection failures stopped counting as conflicts, the
// adaptive limit they cut gave 0.65 on a quiet machine.
const (
	goodputRounds = 16
	goodputRound  = 200 * time.Millisecond
	goodputFloor  = 0.70
)
