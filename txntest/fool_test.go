package txntest_test

import (
	"context"
	"maps"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/txntest"
)

// TestCheckCatchesUnsafeFns gives the check functions that are not safe to
// run twice, in the ways application code is not, each with the report a
// user would write for the effect that matters: every one must fail the
// check with a message naming the faulted attempt and both reports.
func TestCheckCatchesUnsafeFns(t *testing.T) {
	ctx := context.Background()
	type check func(t *testing.T, db *memDB, r *txn.Runner[*Tx]) error
	cases := map[string]check{
		"counter outside the transaction": func(t *testing.T, db *memDB, r *txn.Runner[*Tx]) error {
			n := 0
			return txntest.Rerun(ctx, r, func(ctx context.Context, tx *Tx) error {
				n++
				tx.Put("order", 1)
				return nil
			}, func(context.Context) int { return n }, txntest.Reset(func(context.Context) error { n = 0; db.Clear(); return nil }))
		},
		"map outside the transaction": func(t *testing.T, db *memDB, r *txn.Runner[*Tx]) error {
			seen := map[string]int{}
			return txntest.Rerun(ctx, r, func(ctx context.Context, tx *Tx) error {
				seen["sku-1"]++
				return nil
			}, func(context.Context) map[string]int { return maps.Clone(seen) }, txntest.Reset(func(context.Context) error { clear(seen); return nil }))
		},
		"captured slice": func(t *testing.T, db *memDB, r *txn.Runner[*Tx]) error {
			var lines []string
			return txntest.Rerun(ctx, r, func(ctx context.Context, tx *Tx) error {
				lines = append(lines, "line")
				return nil
			}, func(context.Context) []string { return append([]string(nil), lines...) },
				txntest.Reset(func(context.Context) error { lines = lines[:0]; return nil }))
		},
		"send on a channel": func(t *testing.T, db *memDB, r *txn.Runner[*Tx]) error {
			ch := make(chan string, 16)
			return txntest.Rerun(ctx, r, func(ctx context.Context, tx *Tx) error {
				ch <- "order placed"
				return nil
			}, func(context.Context) int { return len(ch) }, txntest.Reset(func(context.Context) error {
				for len(ch) > 0 {
					<-ch
				}
				return nil
			}))
		},
		"HTTP call from fn": func(t *testing.T, db *memDB, r *txn.Runner[*Tx]) error {
			var calls atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { calls.Add(1) }))
			defer srv.Close()
			return txntest.Rerun(ctx, r, func(ctx context.Context, tx *Tx) error {
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/charge", nil)
				if err != nil {
					return err
				}
				resp, err := srv.Client().Do(req)
				if err != nil {
					return err
				}
				return resp.Body.Close()
			}, func(context.Context) int64 { return calls.Load() }, txntest.Reset(func(context.Context) error { calls.Store(0); return nil }))
		},
		"write outside the transaction that survives its rollback": func(t *testing.T, db *memDB, r *txn.Runner[*Tx]) error {
			return txntest.Rerun(ctx, r, func(ctx context.Context, tx *Tx) error {
				db.Put("audit", db.Get("audit")+1) // another connection, autocommit
				tx.Put("order", 1)
				return nil
			}, func(context.Context) map[string]int {
				return map[string]int{"audit": db.Get("audit"), "order": db.Get("order")}
			},
				txntest.Reset(func(context.Context) error { db.Clear(); return nil }))
		},
		"variable set by an earlier attempt": func(t *testing.T, db *memDB, r *txn.Runner[*Tx]) error {
			created := false
			return txntest.Rerun(ctx, r, func(ctx context.Context, tx *Tx) error {
				if !created { // "we already inserted the row"
					tx.Put("order", 1)
					created = true
				}
				tx.Put("line", 1)
				return nil
			}, func(context.Context) map[string]int {
				return map[string]int{"order": db.Get("order"), "line": db.Get("line")}
			},
				txntest.Reset(func(context.Context) error { created = false; db.Clear(); return nil }))
		},
		"value cached by an earlier attempt, with Meanwhile": func(t *testing.T, db *memDB, r *txn.Runner[*Tx]) error {
			var cached *int
			return txntest.Rerun(ctx, r, func(ctx context.Context, tx *Tx) error {
				if cached == nil {
					v := tx.Get("balance")
					cached = &v
				}
				tx.Put("balance", *cached-10)
				return nil
			}, func(context.Context) int { return db.Get("balance") },
				txntest.Reset(func(context.Context) error { cached = nil; db.Put("balance", 100); return nil }),
				txntest.Meanwhile(func(context.Context) error { db.Put("balance", db.Get("balance")+50); return nil }))
		},
		"value read before Run, with Meanwhile": func(t *testing.T, db *memDB, r *txn.Runner[*Tx]) error {
			return txntest.RerunCall(ctx, r, func(ctx context.Context, r *txn.Runner[*Tx]) error {
				balance := db.Get("balance")
				return r.Run(ctx, func(ctx context.Context, tx *Tx) error {
					tx.Put("balance", balance-10)
					return nil
				})
			}, func(context.Context) int { return db.Get("balance") },
				txntest.Reset(func(context.Context) error { db.Put("balance", 100); return nil }),
				txntest.Meanwhile(func(context.Context) error { db.Put("balance", db.Get("balance")+50); return nil }))
		},
		"side effect on the second retry only": func(t *testing.T, db *memDB, r *txn.Runner[*Tx]) error {
			attempt := 0
			sent := 0
			return txntest.Rerun(ctx, r, func(ctx context.Context, tx *Tx) error {
				if attempt++; attempt == 3 {
					sent++
				}
				return txn.OnCommit(ctx, func() { sent++ })
			}, func(context.Context) int { return sent }, txntest.Reset(func(context.Context) error { attempt, sent = 0, 0; return nil }))
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			db, r := newRunner(t)
			err := c(t, db, r)
			require.Error(t, err, "an unsafe fn passed the check")
			assert.Contains(t, err.Error(), "txntest: not safe to re-run: after attempt")
			assert.Contains(t, err.Error(), "after a single attempt it returned")
			t.Log(err)
		})
	}
}

// TestCheckPassesSafeFns: functions that are safe to run again pass, so
// that the check raises no false alarm.
func TestCheckPassesSafeFns(t *testing.T) {
	ctx := context.Background()
	type check func(t *testing.T, db *memDB, r *txn.Runner[*Tx]) error
	cases := map[string]check{
		"writes in the transaction": func(t *testing.T, db *memDB, r *txn.Runner[*Tx]) error {
			return txntest.Rerun(ctx, r, func(ctx context.Context, tx *Tx) error {
				tx.Put("balance", tx.Get("balance")-10)
				return nil
			}, func(context.Context) int { return db.Get("balance") },
				txntest.Reset(func(context.Context) error { db.Put("balance", 100); return nil }),
				txntest.Meanwhile(func(context.Context) error { db.Put("balance", db.Get("balance")+50); return nil }))
		},
		"side effects in OnCommit": func(t *testing.T, db *memDB, r *txn.Runner[*Tx]) error {
			var sent []string
			ch := make(chan int, 16)
			return txntest.Rerun(ctx, r, func(ctx context.Context, tx *Tx) error {
				tx.Put("order", 1)
				return txn.OnCommit(ctx, func() { sent = append(sent, "placed"); ch <- 1 })
			}, func(context.Context) []any { return []any{append([]string(nil), sent...), len(ch)} },
				txntest.Reset(func(context.Context) error {
					sent = nil
					for len(ch) > 0 {
						<-ch
					}
					return nil
				}), txntest.Retries(4))
		},
		"state local to fn, result through Do": func(t *testing.T, db *memDB, r *txn.Runner[*Tx]) error {
			var total int
			return txntest.RerunCall(ctx, r, func(ctx context.Context, r *txn.Runner[*Tx]) error {
				v, err := txn.Do(ctx, r, func(ctx context.Context, tx *Tx) (int, error) {
					sum := 0
					for _, k := range tx.Keys("line:") {
						sum += tx.Get(k)
					}
					return sum, nil
				})
				total = v
				return err
			}, func(context.Context) int { return total },
				txntest.Reset(func(context.Context) error {
					total = 0
					db.Clear()
					db.Put("line:1", 3)
					db.Put("line:2", 4)
					return nil
				}))
		},
		"idempotent write outside the transaction": func(t *testing.T, db *memDB, r *txn.Runner[*Tx]) error {
			return txntest.Rerun(ctx, r, func(ctx context.Context, tx *Tx) error {
				db.Put("seen:42", 1) // upsert of a constant: the same after any number of runs
				tx.Put("order", 1)
				return nil
			}, func(context.Context) map[string]int {
				return map[string]int{"seen": db.Get("seen:42"), "order": db.Get("order")}
			},
				txntest.Reset(func(context.Context) error { db.Clear(); return nil }), txntest.Retries(3))
		},
		"idempotent call checked after a lost commit reply": func(t *testing.T, db *memDB, r *txn.Runner[*Tx]) error {
			return txntest.RerunCall(ctx, r, func(ctx context.Context, r *txn.Runner[*Tx]) error {
				return r.Run(ctx, func(ctx context.Context, tx *Tx) error {
					tx.Put("order:7", 1) // keyed by the request: applying it twice is applying it once
					return nil
				}, txn.Idempotent())
			}, func(context.Context) int { return db.Get("order:7") },
				txntest.Reset(func(context.Context) error { db.Clear(); return nil }), txntest.At(txn.InterceptBeforeCommit, txn.InterceptCommit, txn.InterceptAfterCommit))
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			db, r := newRunner(t)
			assert.NoError(t, c(t, db, r))
		})
	}
}

// fakeMailer is a fake of an outside service that a report returns as a
// pointer, not a copy.
type fakeMailer struct{ sent []string }

// TestCheckRefusesAReportThatIsNotACopy: a report that returns the fake
// itself (a pointer, or a map cleared by Reset) hands the check the same
// memory after every run, so that the run without faults and the faulted
// one compare equal whatever fn did. The check must say so instead of
// passing an unsafe fn.
func TestCheckRefusesAReportThatIsNotACopy(t *testing.T) {
	ctx := context.Background()
	t.Run("pointer to the fake", func(t *testing.T) {
		_, r := newRunner(t)
		m := &fakeMailer{}
		err := txntest.Rerun(ctx, r, func(ctx context.Context, tx *Tx) error {
			m.sent = append(m.sent, "welcome")
			return nil
		}, func(context.Context) *fakeMailer { return m }, txntest.Reset(func(context.Context) error { m.sent = nil; return nil }))
		require.Error(t, err, "an unsafe fn passed the check")
		assert.Contains(t, err.Error(), "report must return copies")
	})
	t.Run("map cleared by Reset", func(t *testing.T) {
		_, r := newRunner(t)
		seen := map[string]int{}
		err := txntest.Rerun(ctx, r, func(ctx context.Context, tx *Tx) error {
			seen["sku-1"]++
			return nil
		}, func(context.Context) map[string]int { return seen }, txntest.Reset(func(context.Context) error { clear(seen); return nil }))
		require.Error(t, err, "an unsafe fn passed the check")
		assert.Contains(t, err.Error(), "report must return copies")
	})
	t.Run("a safe fn with a pointer report still passes", func(t *testing.T) {
		_, r := newRunner(t)
		m := &fakeMailer{}
		err := txntest.Rerun(ctx, r, func(ctx context.Context, tx *Tx) error {
			return txn.OnCommit(ctx, func() { m.sent = append(m.sent, "welcome") })
		}, func(context.Context) *fakeMailer { return m }, txntest.Reset(func(context.Context) error { m.sent = nil; return nil }))
		assert.NoError(t, err)
	})
}
