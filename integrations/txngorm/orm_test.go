package txngorm_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/integrationtest"
	"gorm.io/gorm"
)

// counterTable creates a one-row counter table (id 1, n 0) and a log table,
// and returns their names.
func counterTable(t *testing.T, db integrationtest.DB[*gorm.DB]) (counter, log string) {
	t.Helper()
	ctx := integrationtest.Context(t)
	counter = integrationtest.CreateTable(t, db, prefix, "id INT PRIMARY KEY, n INT NOT NULL")
	log = integrationtest.CreateTable(t, db, prefix, "name VARCHAR(64) PRIMARY KEY")
	require.NoError(t, db.Exec(ctx, "INSERT INTO "+counter+" VALUES (1, 0)"))
	return counter, log
}

// bump reads the counter on tx (with the dialect's share lock), calls wait,
// then writes it back plus one.
func bump(tx *gorm.DB, d integrationtest.Dialect, counter string, wait func() error) error {
	var n int
	if err := tx.Raw("SELECT n FROM " + counter + " WHERE id = 1" + d.ShareLock).Scan(&n).Error; err != nil {
		return err
	}
	if wait != nil {
		if err := wait(); err != nil {
			return txn.Permanent(err)
		}
	}
	return tx.Exec("UPDATE "+counter+" SET n = ? WHERE id = 1", n+1).Error
}

// TestGormTransactionConflictRestartsRun: two Runs race on a counter inside
// GORM's own tx.Transaction (a GORM savepoint) and fn returns what
// tx.Transaction returned. The loser's conflict, raised inside GORM's
// savepoint and followed by GORM's ROLLBACK TO (which succeeds on
// PostgreSQL and SQLite and fails on MariaDB, where the deadlock ended the
// whole transaction), still restarts the whole Run: the counter ends at 2,
// and exactly one log row per Run (of its committed attempt) is kept.
func TestGormTransactionConflictRestartsRun(t *testing.T) {
	forEach(t, dialects, func(t *testing.T, d dialect) {
		for _, prepare := range []bool{false, true} {
			t.Run(fmt.Sprintf("PrepareStmt=%v", prepare), func(t *testing.T) {
				cfg := gormConfig()
				cfg.PrepareStmt = prepare
				db := d.suiteDB(t, cfg)
				ctx := integrationtest.Context(t)
				counter, log := counterTable(t, db)
				rec := &integrationtest.Recorder{}
				r := db.Runner(txn.WithObserver(rec)).WithBegin(db.TxOptions(d.TxOptions))
				bar := integrationtest.NewBarrier(2)
				var calls [2]atomic.Int32
				errs := make([]error, 2)
				var wg sync.WaitGroup
				for g := range 2 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs[g] = r.Run(ctx, func(ctx context.Context, tx *gorm.DB) error {
							attempt := calls[g].Add(1)
							if !d.SingleWriter {
								if err := tx.Exec("INSERT INTO "+log+" (name) VALUES (?)", fmt.Sprintf("g%d-a%d", g, attempt)).Error; err != nil {
									return err
								}
							}
							return tx.Transaction(func(tx *gorm.DB) error {
								var wait func() error
								if attempt == 1 {
									wait = func() error { return bar.Wait(ctx) }
								}
								return bump(tx, d.Dialect, counter, wait)
							})
						})
					}()
				}
				wg.Wait()
				require.NoError(t, errs[0])
				require.NoError(t, errs[1])
				integrationtest.CheckRacedPair(t, ctx, db, rec, counter, log, &calls)
			})
		}
	})
}

// TestFnEndsTheHandle: fn commits or rolls back the *gorm.DB it received,
// directly or through GORM's tx.Begin on it (which cannot nest and hands
// back the same transaction with ErrInvalidTransaction). Run never retries,
// reports txn.ErrFnFinishedTx, and the database holds what fn's own COMMIT
// or ROLLBACK decided: one row, or none, never two.
func TestFnEndsTheHandle(t *testing.T) {
	forEach(t, dialects, func(t *testing.T, d dialect) {
		for _, prepare := range []bool{false, true} {
			cfg := gormConfig()
			cfg.PrepareStmt = prepare
			db := d.suiteDB(t, cfg)
			r := db.Runner()
			for name, c := range map[string]struct {
				end  func(tx *gorm.DB) error
				rows int
			}{
				"Commit":         {func(tx *gorm.DB) error { return tx.Commit().Error }, 1},
				"Rollback":       {func(tx *gorm.DB) error { return tx.Rollback().Error }, 0},
				"Begin+Commit":   {func(tx *gorm.DB) error { b := tx.Begin(); _ = b.Commit(); return nil }, 1},
				"Begin+Rollback": {func(tx *gorm.DB) error { b := tx.Begin(); _ = b.Rollback(); return nil }, 0},
			} {
				t.Run(fmt.Sprintf("PrepareStmt=%v/%s", prepare, name), func(t *testing.T) {
					ctx := integrationtest.Context(t)
					tbl := integrationtest.CreateTable(t, db, prefix, "name VARCHAR(64) PRIMARY KEY")
					calls := 0
					err := r.Run(ctx, func(ctx context.Context, tx *gorm.DB) error {
						calls++
						if err := tx.Exec("INSERT INTO " + tbl + " (name) VALUES ('x')").Error; err != nil {
							return err
						}
						return c.end(tx)
					})
					require.ErrorIs(t, err, txn.ErrFnFinishedTx)
					assert.Equal(t, 1, calls, "never re-run")
					n, err := db.Ints(ctx, "SELECT COUNT(*) FROM "+tbl)
					require.NoError(t, err)
					assert.Equal(t, []int{c.rows}, n)
				})
			}
		}
	})
}

// TestUniqueViolationIsPermanent: a duplicate key is not retried, and the
// error Run returns is still the driver's (errors.As to *pgconn.PgError on
// PostgreSQL), or, with TranslateError, matches gorm.ErrDuplicatedKey.
func TestUniqueViolationIsPermanent(t *testing.T) {
	forEach(t, dialects, func(t *testing.T, d dialect) {
		for _, translate := range []bool{false, true} {
			t.Run(fmt.Sprintf("TranslateError=%v", translate), func(t *testing.T) {
				cfg := gormConfig()
				cfg.TranslateError = translate
				db := d.suiteDB(t, cfg)
				ctx := integrationtest.Context(t)
				tbl := integrationtest.CreateTable(t, db, prefix, "id INT PRIMARY KEY, name VARCHAR(64)")
				type row struct {
					ID   int
					Name string
				}
				calls := 0
				err := db.Runner().Run(ctx, func(ctx context.Context, tx *gorm.DB) error {
					calls++
					if err := tx.Table(tbl).Create(&row{ID: 1, Name: "a"}).Error; err != nil {
						return err
					}
					return tx.Table(tbl).Create(&row{ID: 1, Name: "b"}).Error
				})
				require.Error(t, err)
				assert.Equal(t, 1, calls, "a constraint error is not retried")
				var ge *txn.GiveUpError
				assert.False(t, errors.As(err, &ge), "returned as it is, not as a give-up: %v", err)
				if translate {
					assert.ErrorIs(t, err, gorm.ErrDuplicatedKey)
				}
				if d.Name == "postgres" && !translate {
					var pe *pgconn.PgError
					require.ErrorAs(t, err, &pe)
					assert.Equal(t, "23505", pe.Code)
				}
				n, err := db.Ints(ctx, "SELECT COUNT(*) FROM "+tbl)
				require.NoError(t, err)
				assert.Equal(t, []int{0}, n)
			})
		}
	})
}

// TestSmallPoolManyRuns: a pool of two connections and 24 concurrent Runs
// incrementing one counter, some with a nested Run: no Run hangs, every
// one ends by its deadline, and the counter equals the Runs that
// committed.
func TestSmallPoolManyRuns(t *testing.T) {
	forEach(t, dialects, func(t *testing.T, d dialect) {
		for _, prepare := range []bool{false, true} {
			t.Run(fmt.Sprintf("PrepareStmt=%v", prepare), func(t *testing.T) {
				cfg := gormConfig()
				cfg.PrepareStmt = prepare
				g := &gormDB{d: d, db: d.open(t, cfg)}
				sqlDB, err := g.db.DB()
				require.NoError(t, err)
				sqlDB.SetMaxOpenConns(2)
				counter, _ := counterTable(t, g)
				r := g.Runner(txn.MaxAttempts(1000)).WithBegin(g.TxOptions(d.TxOptions))
				const runs = 24
				var ok atomic.Int32
				errs := make(chan error, runs)
				var wg sync.WaitGroup
				start := time.Now()
				for i := range runs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
						defer cancel()
						err := r.Run(ctx, func(ctx context.Context, tx *gorm.DB) error {
							if i%2 == 0 {
								return r.Run(ctx, func(ctx context.Context, tx *gorm.DB) error {
									return bump(tx, d.Dialect, counter, nil)
								})
							}
							return bump(tx, d.Dialect, counter, nil)
						})
						if err == nil {
							ok.Add(1)
						} else {
							errs <- err
						}
					}()
				}
				done := make(chan struct{})
				go func() { wg.Wait(); close(done) }()
				select {
				case <-done:
				case <-time.After(40 * time.Second):
					t.Fatal("Runs still running 40 s after their 20 s deadline")
				}
				close(errs)
				for err := range errs {
					assert.ErrorIs(t, err, context.DeadlineExceeded, "only a deadline may stop a Run")
				}
				t.Logf("%d of %d committed in %v", ok.Load(), runs, time.Since(start))
				n, err := g.Ints(context.Background(), "SELECT n FROM "+counter+" WHERE id = 1")
				require.NoError(t, err)
				assert.Equal(t, []int{int(ok.Load())}, n)
				assert.Equal(t, 0, sqlDB.Stats().InUse)
			})
		}
	})
}

// hooked is a model whose hooks count their calls and register an
// OnCommit callback on the context GORM hands them.
type hooked struct {
	ID   int `gorm:"primaryKey;autoIncrement:false"`
	Name string
	tbl  string `gorm:"-"`
}

// hookLog is what the hooks of hooked record.
type hookLog struct {
	before, after atomic.Int32
	onCommitErr   error
	mu            sync.Mutex
	committed     []string
}

type hookLogKey struct{}

func (h *hooked) BeforeCreate(tx *gorm.DB) error {
	tx.Statement.Context.Value(hookLogKey{}).(*hookLog).before.Add(1)
	return nil
}

func (h *hooked) AfterCreate(tx *gorm.DB) error {
	l := tx.Statement.Context.Value(hookLogKey{}).(*hookLog)
	l.after.Add(1)
	name := h.Name
	err := txn.OnCommit(tx.Statement.Context, func() {
		l.mu.Lock()
		l.committed = append(l.committed, name)
		l.mu.Unlock()
	})
	if err != nil {
		l.mu.Lock()
		l.onCommitErr = err
		l.mu.Unlock()
	}
	return err
}

// TestHooksSeeTheirTransaction: GORM hooks read the context from the
// handle (tx.Statement.Context). An AfterCreate hook that registers an
// OnCommit callback there (publish after commit) finds the transaction on
// the handle fn received and on a nested Run's handle; the callback of a
// row whose nested Run rolled back to its savepoint never runs, and the
// hooks run once per attempt.
func TestHooksSeeTheirTransaction(t *testing.T) {
	forEach(t, dialects, func(t *testing.T, d dialect) {
		db := d.suiteDB(t, gormConfig())
		ctx := integrationtest.Context(t)
		tbl := integrationtest.CreateTable(t, db, prefix, "id INT PRIMARY KEY, name VARCHAR(64)")
		l := &hookLog{}
		ctx = context.WithValue(ctx, hookLogKey{}, l)
		r := db.Runner()
		errRefused := errors.New("refused")
		attempts := 0
		err := r.Run(ctx, func(ctx context.Context, tx *gorm.DB) error {
			attempts++
			if err := tx.Table(tbl).Create(&hooked{ID: 1, Name: "outer"}).Error; err != nil {
				return err
			}
			err := r.Run(ctx, func(ctx context.Context, tx *gorm.DB) error {
				if err := tx.Table(tbl).Create(&hooked{ID: 2, Name: "undone"}).Error; err != nil {
					return err
				}
				return errRefused
			})
			if !errors.Is(err, errRefused) {
				return fmt.Errorf("nested Run: %w", err)
			}
			if err := r.Run(ctx, func(ctx context.Context, tx *gorm.DB) error {
				return tx.Table(tbl).Create(&hooked{ID: 3, Name: "kept"}).Error
			}); err != nil {
				return err
			}
			if attempts == 1 {
				return txn.Retry(errors.New("again"))
			}
			return nil
		})
		require.NoError(t, err)
		require.NoError(t, l.onCommitErr)
		assert.Equal(t, int32(6), l.before.Load(), "BeforeCreate once per row per attempt")
		assert.Equal(t, int32(6), l.after.Load(), "AfterCreate once per row per attempt")
		assert.Equal(t, []string{"outer", "kept"}, l.committed, "callbacks of the committed attempt only, not of the undone savepoint")
		got, err := db.Strings(ctx, "SELECT name FROM "+tbl+" ORDER BY id")
		require.NoError(t, err)
		assert.Equal(t, []string{"outer", "kept"}, got)
	})
}
