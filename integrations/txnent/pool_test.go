package txnent_test

import (
	"testing"

	"entgo.io/ent/dialect"
	"github.com/stretchr/testify/assert"
	"github.com/txnkit/txn/integrations/txnent"
)

// TestPoolSizeIsCeiling: the adaptive limit of a Runner over ent's SQL
// driver (also wrapped by dialect.Debug) never exceeds the MaxOpenConns of
// its *sql.DB, so that attempts beyond the pool wait in the Runner's queue
// rather than inside the pool.
func TestPoolSizeIsCeiling(t *testing.T) {
	e := sqliteServer.suiteDB(t)
	e.db.SetMaxOpenConns(3)
	assert.Equal(t, 3, txnent.New(e.drv).AdmissionStats().Ceiling)
	assert.Equal(t, 3, txnent.New(dialect.Debug(e.drv)).AdmissionStats().Ceiling)
	e.db.SetMaxOpenConns(0)
	assert.Greater(t, txnent.New(e.drv).AdmissionStats().Ceiling, 3, "unlimited: the default ceiling")
}
