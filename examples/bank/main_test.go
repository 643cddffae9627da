package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn/internal/testdb"
	"go.mongodb.org/mongo-driver/v2/mongo"
	mongooptions "go.mongodb.org/mongo-driver/v2/mongo/options"
)

func TestSQLite(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"--workers", "4", "--transfers", "20"}, &out))
	assert.Contains(t, out.String(), "sqlite: 80 transfers committed")
	assert.Contains(t, out.String(), "no money created or lost")
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--backend", "oracle"},
		{"--accounts", "1"},
		{"--workers", "0"},
		{"--table", "x; DROP TABLE y"},
		{"--nope"},
	} {
		assert.Error(t, run(context.Background(), args, &bytes.Buffer{}), "%v", args)
	}
}

// TestServers runs the example on PostgreSQL and MySQL/MariaDB, on a table
// of its own. It skips when a server is not reachable, unless
// TXN_REQUIRE_DBS=1.
func TestServers(t *testing.T) {
	for _, c := range []struct{ backend, driver, env, def string }{
		{"postgres", "pgx", testdb.PostgresEnv, testdb.PostgresDefault},
		{"mysql", "mysql", testdb.MySQLEnv, testdb.MySQLDefault},
	} {
		t.Run(c.backend, func(t *testing.T) {
			dsn := orDefault("", c.env, c.def)
			db, err := sql.Open(c.driver, dsn)
			require.NoError(t, err)
			t.Cleanup(func() { _ = db.Close() }) // after the DROP below: cleanups run last-in, first-out
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := db.PingContext(ctx); err != nil {
				testdb.Unreachable(t, c.backend, c.env, err)
			}
			b := make([]byte, 4)
			_, _ = rand.Read(b)
			table := "txn_example_test_" + hex.EncodeToString(b)
			t.Cleanup(func() {
				_, err := db.Exec("DROP TABLE IF EXISTS " + table)
				assert.NoError(t, err)
			})

			var out bytes.Buffer
			require.NoError(t, run(context.Background(), []string{"--backend", c.backend, "--table", table,
				"--workers", "4", "--transfers", "20", "--accounts", "2"}, &out))
			assert.Contains(t, out.String(), c.backend+": 80 transfers committed")
			assert.Contains(t, out.String(), "no money created or lost")
			t.Log(out.String())
		})
	}
}

// TestMongo runs the example on the replica set TXN_MONGODB_URI names. No
// MongoDB server can be installed on the development machines, so it is
// skipped without the variable, even with TXN_REQUIRE_DBS=1.
func TestMongo(t *testing.T) {
	if os.Getenv("TXN_MONGODB_URI") == "" {
		t.Skip("TXN_MONGODB_URI not set: no MongoDB replica set to run on")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	table := "txn_example_test_" + hex.EncodeToString(b)
	t.Cleanup(func() {
		client, err := mongo.Connect(mongooptions.Client().ApplyURI(os.Getenv("TXN_MONGODB_URI")))
		require.NoError(t, err)
		defer client.Disconnect(context.Background())
		assert.NoError(t, client.Database("test").Collection(table).Drop(context.Background()))
	})
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"--backend", "mongodb", "--table", table,
		"--workers", "4", "--transfers", "20", "--accounts", "2"}, &out))
	assert.Contains(t, out.String(), "mongodb: 80 transfers committed")
	assert.Contains(t, out.String(), "no money created or lost")
}
