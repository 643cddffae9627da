package txngorm_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn/integrations/txngorm"
)

// TestPoolSizeIsCeiling: the adaptive limit of a Runner over a GORM handle
// never exceeds the MaxOpenConns of the *sql.DB under it, so that attempts
// beyond the pool wait in the Runner's queue rather than inside the pool.
func TestPoolSizeIsCeiling(t *testing.T) {
	db := openSQLite(t, gormConfig())
	sqlDB, err := db.DB()
	require.NoError(t, err)
	sqlDB.SetMaxOpenConns(3)
	assert.Equal(t, 3, txngorm.New(db).AdmissionStats().Ceiling)
	sqlDB.SetMaxOpenConns(0)
	assert.Greater(t, txngorm.New(db).AdmissionStats().Ceiling, 3, "unlimited: the default ceiling")
}
