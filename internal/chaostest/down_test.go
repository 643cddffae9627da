package chaostest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
)

// refuser is a listener that counts the connections made to it and resets
// each one at once: a database port where nothing answers.
type refuser struct {
	ln    net.Listener
	dials atomic.Int64
	wg    sync.WaitGroup
}

func newRefuser(t *testing.T) *refuser {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	r := &refuser{ln: ln}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.dials.Add(1)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = c.Close()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		r.wg.Wait()
	})
	return r
}

// closedPort returns an address where nothing listens: connections are
// refused.
func closedPort(t *testing.T) string {
	return fmt.Sprintf("127.0.0.1:%d", freePort(t))
}

// TestDatabaseDown offers 1 000 Runs from 32 goroutines to a default
// Runner whose database is down, on PostgreSQL and MariaDB: first behind a
// listener that counts the connections and resets them, then on a closed
// port. With the reconnect budget, every Run fails fast with ErrUnavailable
// (or, for the first few, the attempt limit), fn never runs, and the tries
// stay near one per Run.
func TestDatabaseDown(t *testing.T) {
	const runs, workers = 1000, 32
	for _, name := range []string{"PostgreSQL", "MariaDB"} {
		for _, mode := range []string{"reset", "refused"} {
			t.Run(name+"/"+mode, func(t *testing.T) {
				var addr string
				var dials func() int64
				if mode == "reset" {
					ref := newRefuser(t)
					addr, dials = ref.ln.Addr().String(), ref.dials.Load
				} else {
					addr, dials = closedPort(t), func() int64 { return -1 }
				}
				run := downRunner(t, name, addr, workers)
				var (
					mu            sync.Mutex
					tries, ran    int
					elapsed       []time.Duration
					reasons       = map[string]int{}
					wg            sync.WaitGroup
					next          atomic.Int64
					unexpectedErr []error
					sample        error
				)
				start := time.Now()
				for w := 0; w < workers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= runs {
							ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
							t0 := time.Now()
							err := run(ctx)
							el := time.Since(t0)
							cancel()
							var gu *txn.GiveUpError
							mu.Lock()
							elapsed = append(elapsed, el)
							if sample == nil {
								sample = err
							}
							if errors.As(err, &gu) {
								tries += gu.Unreachable + gu.Attempts
								ran += gu.Attempts
								switch {
								case errors.Is(err, txn.ErrUnavailable):
									reasons["unavailable"]++
								case errors.Is(err, txn.ErrAttemptsExhausted):
									reasons["attempt limit"]++
								default:
									reasons[fmt.Sprint(gu.Reason)]++
								}
							} else {
								unexpectedErr = append(unexpectedErr, err)
							}
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
				wall := time.Since(start)
				require.Empty(t, unexpectedErr, "every Run gives up with a GiveUpError")
				sort.Slice(elapsed, func(i, j int) bool { return elapsed[i] < elapsed[j] })
				perRun := float64(tries) / runs
				dialInfo := "not countable"
				if d := dials(); d >= 0 {
					dialInfo = fmt.Sprintf("%d connections (%.2f per Run)", d, float64(d)/runs)
				}
				figure(t, "%s down (%s): %d Runs from %d goroutines in %v: %d tries (%.3f per Run), fn ran %d times, %s; Run time median %v, max %v; %v",
					name, mode, runs, workers, wall.Round(time.Millisecond), tries, perRun, ran, dialInfo,
					elapsed[len(elapsed)/2].Round(time.Microsecond), elapsed[len(elapsed)-1].Round(time.Millisecond), reasons)
				figure(t, "%s down (%s): a Run's error: %v", name, mode, sample)
				assert.Zero(t, ran, "fn never ran")
				assert.LessOrEqual(t, perRun, 1.2, "about one try per Run")
				// The goal is about 1 s; twice that leaves room for a
				// shared 2-core machine under -race.
				assert.Less(t, elapsed[len(elapsed)-1], 2*time.Second, "each Run returns fast")
			})
		}
	}
}

// downRunner returns a transfer-less Run of a default Runner for backend
// name whose database is at addr.
func downRunner(t *testing.T, name, addr string, conns int) func(ctx context.Context) error {
	t.Helper()
	switch name {
	case "PostgreSQL":
		cfg := pgDownConfig(t, addr, conns)
		return cfg
	default:
		return mysqlDown(t, addr, conns)
	}
}
