package txnbun_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/txnkit/txn/integrations/txnbun"
)

// TestPoolSizeIsCeiling: the adaptive limit of a Runner over a *bun.DB
// never exceeds its MaxOpenConns, so that attempts beyond the pool wait in
// the Runner's queue rather than inside the pool.
func TestPoolSizeIsCeiling(t *testing.T) {
	db := openLite(t, sqliteDSN(t))
	db.SetMaxOpenConns(3)
	assert.Equal(t, 3, txnbun.New(db).AdmissionStats().Ceiling)
	db.SetMaxOpenConns(0)
	assert.Greater(t, txnbun.New(db).AdmissionStats().Ceiling, 3, "unlimited: the default ceiling")
}
