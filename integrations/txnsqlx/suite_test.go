package txnsqlx_test

import (
	"testing"

	"github.com/txnkit/txn/internal/integrationtest"
)

// TestConflictRetried: two Runs lose a real race on one counter; see
// integrationtest.ConflictRetried. txnsqlx.Classify alone retries
// PostgreSQL's.
func TestConflictRetried(t *testing.T) {
	forEach(t, append(dialects, pgFallback), func(t *testing.T, d dialect) {
		integrationtest.ConflictRetried(t, d.suiteDB(t), prefix)
	})
}

// TestNestedRunRollsBackToSavepoint: see
// integrationtest.NestedRollsBackToSavepoint.
func TestNestedRunRollsBackToSavepoint(t *testing.T) {
	forEach(t, dialects, func(t *testing.T, d dialect) {
		integrationtest.NestedRollsBackToSavepoint(t, d.suiteDB(t), prefix)
	})
}

// TestNestedRunConflictRestartsWholeTransaction: a nested Run loses a real
// race and the whole transaction restarts, whether fn returns the nested
// error or swallows it; see integrationtest.NestedConflictRestarts.
func TestNestedRunConflictRestartsWholeTransaction(t *testing.T) {
	forEach(t, dialects, func(t *testing.T, d dialect) {
		t.Run("propagated", func(t *testing.T) {
			integrationtest.NestedConflictRestarts(t, d.suiteDB(t), prefix, false)
		})
		t.Run("swallowed", func(t *testing.T) {
			integrationtest.NestedConflictRestarts(t, d.suiteDB(t), prefix, true)
		})
	})
}

// TestPanicRollsBack: see integrationtest.PanicRollsBack.
func TestPanicRollsBack(t *testing.T) {
	forEach(t, dialects, func(t *testing.T, d dialect) {
		integrationtest.PanicRollsBack(t, d.suiteDB(t), prefix)
	})
}

// TestBankWorkload: 16 goroutines, one Runner, invariants checked; see
// integrationtest.BankWorkload.
func TestBankWorkload(t *testing.T) {
	forEach(t, dialects, func(t *testing.T, d dialect) {
		integrationtest.BankWorkload(t, d.suiteDB(t), prefix)
	})
}
