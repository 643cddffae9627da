package txnmysql

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/txnkit/txn"
)

// TestClassifyCustomClassifierKeepsConnectionErrors checks that a custom
// classifier given with txn.WithClassifier cannot hide a lost connection,
// and that what it recognises wins: the Runner completes it with the
// backend's connection rules, which see the errors below.
func TestClassifyCustomClassifierKeepsConnectionErrors(t *testing.T) {
	errMine := errors.New("version check failed")
	custom := func(err error) txn.Class {
		if errors.Is(err, errMine) {
			return txn.ClassRetryable
		}
		return txn.ClassPermanent // knows nothing else
	}
	conn := func(err error) txn.Class {
		if c := custom(err); c != txn.ClassPermanent {
			return c
		}
		return classifyConn(err)
	}
	c := conn
	assert.Equal(t, txn.ClassRetryable, c(fmt.Errorf("x: %w", errMine)))
	assert.Equal(t, txn.ClassConnLost, c(mysql.ErrInvalidConn))
	assert.Equal(t, txn.ClassConnLost, c(fmt.Errorf("x: %w", driver.ErrBadConn)))
	assert.Equal(t, txn.ClassConnLost, c(&mysql.MySQLError{Number: erConnectionKilled}))
	// The custom classifier replaces the table: a deadlock is what it says.
	assert.Equal(t, txn.ClassPermanent, c(&mysql.MySQLError{Number: erLockDeadlock}))

	assert.Equal(t, txn.ClassRetryable, Classify(&mysql.MySQLError{Number: erLockDeadlock}))
}
