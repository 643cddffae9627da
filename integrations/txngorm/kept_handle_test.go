package txngorm_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestKeptHandleNeverWritesAfterRun: the *gorm.DB fn receives, the one a
// savepoint receives and the contexts fn keeps past its Run (committed or
// rolled back, with and without conflict keys, with and without
// PrepareStmt) fail every Exec and Raw after the Run and during a later
// Run on the same single connection, and none of their rows reaches the
// database; see integrationtest.KeptHandles.
func TestKeptHandleNeverWritesAfterRun(t *testing.T) {
	forEach(t, dialects, func(t *testing.T, d dialect) {
		for _, prepare := range []bool{false, true} {
			for name, opts := range map[string][]txn.CallOption{"plain": nil, "Keys": {txn.Keys("k")}} {
				t.Run(fmt.Sprintf("PrepareStmt=%v/%s", prepare, name), func(t *testing.T) {
					cfg := gormConfig()
					cfg.PrepareStmt = prepare
					g := &gormDB{d: d, db: d.open(t, cfg)}
					sqlDB, err := g.db.DB()
					require.NoError(t, err)
					sqlDB.SetMaxOpenConns(1)
					integrationtest.KeptHandles(t, g, prefix, g.Runner(), opts...)
				})
			}
		}
	})
}
