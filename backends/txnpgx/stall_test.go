package txnpgx_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/internal/faultproxy"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestBeginBoundedThroughSilentLink: the link goes silent as BEGIN (or,
// with txn.DatabaseKeys, the advisory locks sent with it) leaves: Run
// returns within its deadline plus RollbackTimeout, fn never ran, and the
// next Run on the pool commits once the link speaks again.
func TestBeginBoundedThroughSilentLink(t *testing.T) {
	for _, keyed := range []bool{false, true} {
		t.Run(fmt.Sprintf("keys=%v", keyed), func(t *testing.T) {
			dsn, p := integrationtest.ProxiedPostgresDSN(t)
			cfg, err := pgxpool.ParseConfig(dsn)
			require.NoError(t, err)
			cfg.MaxConns = 1
			pool := newPool(t, cfg)
			const deadline, rollbackTimeout = 500 * time.Millisecond, 500 * time.Millisecond
			var ropts []txn.RunnerOption
			var copts []txn.CallOption
			pattern := "begin"
			if keyed {
				ropts, copts, pattern = append(ropts, txn.DatabaseKeys()), append(copts, txn.Keys("silent")), "pg_advisory_lock"
			}
			r := txnpgx.New(pool, append(ropts, txn.RollbackTimeout(rollbackTimeout))...)
			p.Arm([]byte(pattern), faultproxy.Stall)
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			ran := 0
			start := time.Now()
			err = r.Run(ctx, func(context.Context, pgx.Tx) error { ran++; return nil }, copts...)
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
			require.NoError(t, r.Run(ctx2, func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, "SELECT 1")
				return err
			}, copts...))
		})
	}
}
