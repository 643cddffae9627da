package txnpgx_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
)

// retryCounter counts the retries Run schedules.
type retryCounter struct {
	txn.NopObserver
	n atomic.Int64
}

func (c *retryCounter) RetryScheduled(context.Context, txn.RetryEvent) { c.n.Add(1) }

func TestPoolSizeIsMaxConns(t *testing.T) {
	pool := newPool(t, nil)
	assert.Equal(t, 8, txnpgx.New(pool).AdmissionStats().Ceiling)
	assert.Equal(t, 2, txnpgx.New(pool).AdmissionStats().RetryCeiling)
}

// Two Runners over two pools stand for two processes. With DatabaseKeys,
// read-modify-write increments of one row (a read, then an UPDATE that
// writes what was read plus one) never lose an update, whatever the
// isolation level, and under SERIALIZABLE they never even conflict: each
// transaction takes its snapshot after it holds the key.
func TestDatabaseKeysAcrossRunners(t *testing.T) {
	for _, iso := range []pgx.TxIsoLevel{pgx.ReadCommitted, pgx.Serializable} {
		t.Run(string(iso), func(t *testing.T) {
			p1, p2 := newPool(t, nil), newPool(t, nil)
			tbl := counterTable(t, p1)
			obs := &retryCounter{}
			begin := txnpgx.TxOptions(pgx.TxOptions{IsoLevel: iso})
			runners := []*txnpgx.Runner{
				txnpgx.New(p1, txn.DatabaseKeys(), txn.WithObserver(obs)).WithBegin(begin),
				txnpgx.New(p2, txn.DatabaseKeys(), txn.WithObserver(obs)).WithBegin(begin),
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			const perRunner, each = 6, 15
			var wg sync.WaitGroup
			for ri, r := range runners {
				// Two keys, named in opposite orders by the two Runners:
				// they are taken in one order, so they cannot deadlock.
				keys := txn.Keys("counter:1", "ledger")
				if ri == 1 {
					keys = txn.Keys("ledger", "counter:1")
				}
				for g := 0; g < perRunner; g++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := 0; i < each; i++ {
							err := r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
								var v int
								if err := tx.QueryRow(ctx, "SELECT v FROM "+tbl+" WHERE id = 1").Scan(&v); err != nil {
									return err
								}
								_, err := tx.Exec(ctx, "UPDATE "+tbl+" SET v = $1 WHERE id = 1", v+1)
								return err
							}, keys)
							assert.NoError(t, err)
						}
					}()
				}
			}
			wg.Wait()
			assert.Equal(t, 2*perRunner*each, queryInt(t, p1, "SELECT v FROM "+tbl+" WHERE id = 1"), "lost updates")
			assert.Zero(t, obs.n.Load(), "transactions holding the key conflicted")
			assert.Zero(t, queryInt(t, p1, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"), "advisory locks outlived their transactions")
		})
	}
}

// A Run of a second Runner on a key the first holds waits in the database,
// on an advisory lock, until the first commits.
func TestDatabaseKeysWaitInDatabase(t *testing.T) {
	p1, p2 := newPool(t, nil), newPool(t, nil)
	r1 := txnpgx.New(p1, txn.DatabaseKeys())
	r2 := txnpgx.New(p2, txn.DatabaseKeys())
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	entered, release := make(chan struct{}), make(chan struct{})
	firstDone := make(chan error, 1)
	go func() {
		firstDone <- r1.Run(ctx, func(context.Context, pgx.Tx) error {
			close(entered)
			<-release
			return nil
		}, txn.Keys("k"))
	}()
	<-entered
	var order atomic.Int32
	secondDone := make(chan error, 1)
	go func() {
		secondDone <- r2.Run(ctx, func(context.Context, pgx.Tx) error {
			order.CompareAndSwap(0, 2)
			return nil
		}, txn.Keys("k"))
	}()
	hash := txnpgx.KeyHashes([]string{"k"})[0]
	for {
		// The advisory lock's 64-bit key is split in classid (high half)
		// and objid (low half).
		n := queryInt(t, p1, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
			AND classid::bigint = ($1::bigint >> 32) & 4294967295 AND objid::bigint = $1::bigint & 4294967295`, hash)
		if n == 1 {
			break
		}
		require.NoError(t, ctx.Err(), "the second Run never waited on the advisory lock")
	}
	require.Zero(t, order.Load(), "the second Run entered fn while the key was held")
	order.CompareAndSwap(0, 1)
	close(release)
	require.NoError(t, <-firstDone)
	require.NoError(t, <-secondDone)
	assert.Equal(t, int32(1), order.Load())
}
