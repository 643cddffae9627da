package txngorm_test

import (
	"fmt"
	"testing"

	"github.com/txnkit/txn/internal/integrationtest"
	"gorm.io/gorm"
)

// TestConflictRetried: two Runs lose a real race on one counter; see
// integrationtest.ConflictRetried. GORM hands over the driver's error with
// and without TranslateError, and txngorm.Classify alone retries
// PostgreSQL's.
func TestConflictRetried(t *testing.T) {
	forEach(t, append(dialects, pgFallback), func(t *testing.T, d dialect) {
		for _, translate := range []bool{false, true} {
			t.Run(fmt.Sprintf("TranslateError=%v", translate), func(t *testing.T) {
				cfg := gormConfig()
				cfg.TranslateError = translate
				integrationtest.ConflictRetried(t, d.suiteDB(t, cfg), prefix)
			})
		}
	})
}

// TestNestedRunRollsBackToSavepoint: see
// integrationtest.NestedRollsBackToSavepoint. With PrepareStmt the
// savepoint statements still run outside GORM's prepared-statement cache.
func TestNestedRunRollsBackToSavepoint(t *testing.T) {
	forEach(t, dialects, func(t *testing.T, d dialect) {
		for _, prepare := range []bool{false, true} {
			t.Run(fmt.Sprintf("PrepareStmt=%v", prepare), func(t *testing.T) {
				cfg := gormConfig()
				cfg.PrepareStmt = prepare
				integrationtest.NestedRollsBackToSavepoint(t, d.suiteDB(t, cfg), prefix)
			})
		}
	})
}

// TestNestedRunConflictRestartsWholeTransaction: a nested Run loses a real
// race and the whole transaction restarts, whether fn returns the nested
// error or swallows it; see integrationtest.NestedConflictRestarts.
func TestNestedRunConflictRestartsWholeTransaction(t *testing.T) {
	forEach(t, dialects, func(t *testing.T, d dialect) {
		t.Run("propagated", func(t *testing.T) {
			integrationtest.NestedConflictRestarts(t, d.suiteDB(t, gormConfig()), prefix, false)
		})
		t.Run("swallowed", func(t *testing.T) {
			integrationtest.NestedConflictRestarts(t, d.suiteDB(t, gormConfig()), prefix, true)
		})
	})
}

// TestPanicRollsBack: see integrationtest.PanicRollsBack.
func TestPanicRollsBack(t *testing.T) {
	forEach(t, dialects, func(t *testing.T, d dialect) {
		integrationtest.PanicRollsBack(t, d.suiteDB(t, gormConfig()), prefix)
	})
}

// TestBankWorkload: 16 goroutines, one Runner, invariants checked; see
// integrationtest.BankWorkload.
func TestBankWorkload(t *testing.T) {
	forEach(t, dialects, func(t *testing.T, d dialect) {
		integrationtest.BankWorkload(t, d.suiteDB(t, gormConfig()), prefix)
	})
}

// TestCommitBoundedThroughSilentLink: a COMMIT that the link never
// delivers ends with txn.ErrCommitUnknown at the caller's deadline; see
// integrationtest.CommitBoundedThroughSilentLink.
func TestCommitBoundedThroughSilentLink(t *testing.T) {
	integrationtest.CommitBoundedOnPostgresAndMariaDB(t, prefix,
		func(t *testing.T, dsn string) integrationtest.DB[*gorm.DB] {
			return &gormDB{d: pgDialect, db: openPostgresAt(t, gormConfig(), dsn)}
		},
		func(t *testing.T, dsn string) integrationtest.DB[*gorm.DB] {
			return &gormDB{d: mysqlDialect, db: openMySQLAt(t, gormConfig(), dsn)}
		})
}

// TestContextEndsDuringFn: the caller's context ends while fn runs on the
// handle it received; Run returns the context's error, not
// txn.ErrFnFinishedTx; see integrationtest.ContextEndsDuringFn.
func TestContextEndsDuringFn(t *testing.T) {
	forEach(t, dialects, func(t *testing.T, d dialect) {
		integrationtest.ContextEndsDuringFn(t, d.suiteDB(t, gormConfig()), prefix)
	})
}

// TestCancelJustBeforeCommit: the caller's context ends after Run's last
// check and before COMMIT is sent; no COMMIT is sent, the transaction is
// rolled back and Run's error is definite; see
// integrationtest.CancelJustBeforeCommit.
func TestCancelJustBeforeCommit(t *testing.T) {
	forEach(t, dialects, func(t *testing.T, d dialect) {
		db := d.suiteDB(t, gormConfig())
		integrationtest.CancelJustBeforeCommit(t, db, prefix, db.Runner())
	})
}
