package txnmysql_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/internal/faultproxy"
)

// TestBeginBoundedThroughSilentLink: the link goes silent as BEGIN (or,
// with txn.DatabaseKeys, GET_LOCK) leaves: Run returns within its deadline
// plus RollbackTimeout, fn never ran, and the next Run on the pool of one
// connection commits once the link speaks again.
func TestBeginBoundedThroughSilentLink(t *testing.T) {
	for _, keyed := range []bool{false, true} {
		t.Run(fmt.Sprintf("keys=%v", keyed), func(t *testing.T) {
			db, p := proxied(t)
			db.SetMaxOpenConns(1)
			const deadline, rollbackTimeout = 500 * time.Millisecond, 500 * time.Millisecond
			var ropts []txn.RunnerOption
			var copts []txn.CallOption
			pattern := "START TRANSACTION"
			if keyed {
				ropts, copts, pattern = append(ropts, txn.DatabaseKeys()), append(copts, txn.Keys("silent")), "GET_LOCK"
			}
			r := txnmysql.New(db, append(ropts, txn.RollbackTimeout(rollbackTimeout))...)
			p.Arm([]byte(pattern), faultproxy.Stall)
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			ran := 0
			start := time.Now()
			err := r.Run(ctx, func(context.Context, *sql.Tx) error { ran++; return nil }, copts...)
			el := time.Since(start)
			fired := p.Fires()
			p.Release()
			t.Logf("Run returned after %v: %v", el.Round(time.Millisecond), err)
			require.Error(t, err)
			assert.Equal(t, 1, fired, "the stall fired")
			assert.Zero(t, ran)
			assert.Less(t, el, deadline+rollbackTimeout+time.Second)
			ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel2()
			require.NoError(t, r.Run(ctx2, func(ctx context.Context, tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, "SELECT 1")
				return err
			}, copts...))
		})
	}
}
