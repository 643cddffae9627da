package txnsqlx_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/txnkit/txn/integrations/txnsqlx"
)

// TestPoolSizeIsCeiling: the adaptive limit of a Runner over an *sqlx.DB
// never exceeds its MaxOpenConns, so that attempts beyond the pool wait in
// the Runner's queue rather than inside the pool.
func TestPoolSizeIsCeiling(t *testing.T) {
	db := openSQLite(t)
	db.SetMaxOpenConns(3)
	assert.Equal(t, 3, txnsqlx.New(db).AdmissionStats().Ceiling)
	db.SetMaxOpenConns(0)
	assert.Greater(t, txnsqlx.New(db).AdmissionStats().Ceiling, 3, "unlimited: the default ceiling")
}
