package txnpgx_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestKeptHandleNeverWritesAfterRun runs integrationtest.KeptHandles over
// a pool of one connection: the pgx.Tx, the savepoint's pgx.Tx and the
// contexts fn keeps past its Run (committed or rolled back) fail every
// INSERT and SELECT after the Run and during a later Run on the same
// connection, and none of their rows reaches the database.
func TestKeptHandleNeverWritesAfterRun(t *testing.T) {
	for name, opts := range map[string][]txn.CallOption{"plain": nil, "Keys": {txn.Keys("k")}} {
		t.Run(name, func(t *testing.T) {
			cfg := poolConfig(t)
			cfg.MaxConns = 1
			db := &pgxDB{pool: newPool(t, cfg)}
			integrationtest.KeptHandles(t, db, "txnpgx", db.Runner(), opts...)
		})
	}
}

// errKeptPgx is the permanent error of the Runs whose fn fails after
// keeping its handles.
var errKeptPgx = errors.New("fn fails after keeping its handles")

// keptRunner is one way of running the kept-handle scenario over pgx: a
// Runner and what reads the database outside it, on the same single
// connection.
type keptRunner struct {
	name string
	// open returns the Runner, the query side for the checks (the pool,
	// or the *pgx.Conn the Runner runs on) and the call options.
	open func(t *testing.T) (*txnpgx.Runner, queryer, []txn.CallOption)
}

// queryer is what *pgxpool.Pool and *pgx.Conn share for the checks.
type queryer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// TestKeptPgxTxEveryMethodRefused: every method of a pgx.Tx (and of a
// savepoint's pgx.Tx) that fn keeps past its Run fails after the Run and
// during a later Run on the same single connection, and nothing reaches
// the database: not its rows, and not a large object created through
// LargeObjects. Over a pool and over a *pgx.Conn, with and without
// DatabaseKeys, for a Run that committed and one that rolled back.
// (TestDatabaseKeysTxClosedAfterRun in keys_test.go checks the errors of
// a keyed Run's handles; this test adds LargeObjects, the rolled-back
// Run, the *pgx.Conn and the later Run.)
func TestKeptPgxTxEveryMethodRefused(t *testing.T) {
	single := func(t *testing.T) *pgx.Conn {
		conn, err := pgx.Connect(testCtx(t), pgDSN())
		if err != nil {
			unavailable(t, err)
		}
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
		return conn
	}
	pool1 := func(t *testing.T) *pgxpool.Pool {
		cfg := poolConfig(t)
		cfg.MaxConns = 1
		return newPool(t, cfg)
	}
	for _, kr := range []keptRunner{
		{"pool", func(t *testing.T) (*txnpgx.Runner, queryer, []txn.CallOption) {
			p := pool1(t)
			return txnpgx.New(p), p, nil
		}},
		{"pool/DatabaseKeys", func(t *testing.T) (*txnpgx.Runner, queryer, []txn.CallOption) {
			p := pool1(t)
			return txnpgx.New(p, txn.DatabaseKeys()), p, []txn.CallOption{txn.Keys("k")}
		}},
		{"conn", func(t *testing.T) (*txnpgx.Runner, queryer, []txn.CallOption) {
			c := single(t)
			return txnpgx.New(c), c, nil
		}},
		{"conn/DatabaseKeys", func(t *testing.T) (*txnpgx.Runner, queryer, []txn.CallOption) {
			c := single(t)
			return txnpgx.New(c, txn.DatabaseKeys()), c, []txn.CallOption{txn.Keys("k")}
		}},
	} {
		for _, commit := range []bool{true, false} {
			outcome := "Committed"
			if !commit {
				outcome = "RolledBack"
			}
			t.Run(kr.name+"/"+outcome, func(t *testing.T) {
				r, q, opts := kr.open(t)
				keptPgxScenario(t, r, q, commit, opts)
			})
		}
	}
}

func keptPgxScenario(t *testing.T, r *txnpgx.Runner, q queryer, commit bool, opts []txn.CallOption) {
	ctx := testCtx(t)
	tbl := fmt.Sprintf("txnpgx_t%016x", rand.Uint64())
	_, err := q.Exec(ctx, "CREATE TABLE "+tbl+" (id int PRIMARY KEY)")
	require.NoError(t, err)
	t.Cleanup(func() {
		_, err := q.Exec(context.Background(), "DROP TABLE IF EXISTS "+tbl)
		assert.NoError(t, err)
	})
	// The large objects the kept handles try to create, by oid.
	oids := []uint32{}
	t.Cleanup(func() {
		for _, oid := range oids {
			_, _ = q.Exec(context.Background(), "SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = $1", oid)
		}
	})
	insert := func(id int) string { return fmt.Sprintf("INSERT INTO %s VALUES (%d)", tbl, id) }

	var kept, keptSp pgx.Tx
	err = r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, insert(1)); err != nil {
			return err
		}
		kept = tx
		err := txn.Savepoint(ctx, func(ctx context.Context, sp pgx.Tx) error {
			keptSp = sp
			_, err := sp.Exec(ctx, insert(2))
			return err
		})
		if err != nil {
			return err
		}
		if !commit {
			return errKeptPgx
		}
		return nil
	}, opts...)
	want := []int{1, 2, 100}
	if commit {
		require.NoError(t, err)
	} else {
		require.ErrorIs(t, err, errKeptPgx)
		want = []int{100}
	}

	use := func(when string, base int) {
		for i, h := range []struct {
			name string
			tx   pgx.Tx
		}{{"transaction", kept}, {"savepoint", keptSp}} {
			id := base + 10*i
			_, err := h.tx.Exec(ctx, insert(id))
			assert.Error(t, err, "%s: %s: Exec", when, h.name)
			rows, err := h.tx.Query(ctx, insert(id+1))
			if err == nil {
				rows.Next()
				err = rows.Err()
				rows.Close()
			}
			assert.Error(t, err, "%s: %s: Query", when, h.name)
			var n int
			assert.Error(t, h.tx.QueryRow(ctx, insert(id+2)+" RETURNING id").Scan(&n), "%s: %s: QueryRow", when, h.name)
			assert.Error(t, h.tx.QueryRow(ctx, "SELECT count(*) FROM "+tbl).Scan(&n), "%s: %s: a read", when, h.name)
			b := &pgx.Batch{}
			b.Queue(insert(id + 3))
			br := h.tx.SendBatch(ctx, b)
			_, errExec := br.Exec()
			errClose := br.Close()
			assert.Error(t, errors.Join(errExec, errClose), "%s: %s: SendBatch", when, h.name)
			_, err = h.tx.CopyFrom(ctx, pgx.Identifier{tbl}, []string{"id"}, pgx.CopyFromRows([][]any{{id + 4}}))
			assert.Error(t, err, "%s: %s: CopyFrom", when, h.name)
			sp, err := h.tx.Begin(ctx)
			if err == nil {
				// A savepoint begun on a kept handle must not be able
				// to write either.
				_, err = sp.Exec(ctx, insert(id+5))
				assert.Error(t, err, "%s: %s: Exec on a savepoint begun after the Run", when, h.name)
			}
			assert.Error(t, err, "%s: %s: Begin", when, h.name)
			oid := 0x7f000000 + rand.Uint32N(0x00ffffff)
			oids = append(oids, oid)
			lo := h.tx.LargeObjects()
			_, err = lo.Create(ctx, oid)
			assert.Error(t, err, "%s: %s: LargeObjects().Create", when, h.name)
		}
	}
	use("after the Run", 10)
	err = r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
		use("during a later Run", 50)
		_, err := tx.Exec(ctx, insert(100))
		return err
	}, opts...)
	require.NoError(t, err, "the later Run")

	rows, err := q.Query(ctx, "SELECT id FROM "+tbl+" ORDER BY id")
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(t, err)
	assert.Equal(t, want, ids, "only the committed Runs' own rows: a kept handle wrote outside its Run")
	var los int
	require.NoError(t, q.QueryRow(ctx, "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = ANY($1)", oids).Scan(&los))
	assert.Zero(t, los, "a kept handle created a large object outside its Run")
}
