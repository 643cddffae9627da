package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn/internal/testdb"
)

// start opens the service on backend (a fresh table) and serves it over a
// real HTTP server on loopback.
func start(t testing.TB, backend string, extra ...string) (*service, string) {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	args := []string{"--backend", backend, "--table", "txn_service_test_" + hex.EncodeToString(b)}
	switch backend {
	case "sqlite":
		args = append(args, "--dsn", filepath.Join(t.TempDir(), "service.db"))
	case "postgres", "mysql":
		env, def, driver := testdb.PostgresEnv, testdb.PostgresDefault, "pgx"
		if backend == "mysql" {
			env, def, driver = testdb.MySQLEnv, testdb.MySQLDefault, "mysql"
		}
		dsn := orDefault("", env, def)
		db, err := sql.Open(driver, dsn)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = db.PingContext(ctx)
		cancel()
		_ = db.Close()
		if err != nil {
			testdb.Unreachable(t, backend, env, err)
		}
		args = append(args, "--dsn", dsn)
	}
	c, err := parse(append(args, extra...))
	require.NoError(t, err)
	svc, err := open(context.Background(), c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(func() {
		srv.Close()
		_, _ = svc.db.Exec("DROP TABLE IF EXISTS " + c.table)
		svc.Close()
	})
	return svc, srv.URL
}

type reply struct {
	code int
	body map[string]any
	took time.Duration
}

func call(t testing.TB, client *http.Client, method, url, body string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	begin := time.Now()
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	took := time.Since(begin)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m), "%s", b)
	return reply{code: resp.StatusCode, body: m, took: took}
}

func transferBody(from, to, amount int) string {
	return fmt.Sprintf(`{"from":%d,"to":%d,"amount":%d}`, from, to, amount)
}

func TestRoutes(t *testing.T) {
	svc, url := start(t, "sqlite")
	c := http.DefaultClient
	r := call(t, c, "POST", url+"/transfer", transferBody(1, 2, 10))
	require.Equal(t, http.StatusOK, r.code, r.body)
	assert.Equal(t, map[string]any{"from_balance": 990.0, "to_balance": 1010.0}, r.body)
	assert.Equal(t, int64(1), svc.published.Load())

	assert.Equal(t, 1010.0, call(t, c, "GET", url+"/balance?id=2", "").body["balance"])
	assert.Equal(t, 2000.0, call(t, c, "GET", url+"/balance", "").body["total"])
	for _, bad := range []struct {
		body string
		code int
	}{
		{`{"from":1`, http.StatusBadRequest},
		{transferBody(1, 1, 5), http.StatusBadRequest},
		{transferBody(1, 2, 0), http.StatusBadRequest},
		{transferBody(9, 2, 5), http.StatusNotFound},
		{transferBody(1, 9, 5), http.StatusNotFound},
		{transferBody(1, 2, 5000), http.StatusUnprocessableEntity},
	} {
		t.Run(bad.body, func(t *testing.T) {
			assert.Equal(t, bad.code, call(t, c, "POST", url+"/transfer", bad.body).code, bad.body)
		})
	}
	assert.Equal(t, 2000.0, call(t, c, "GET", url+"/balance", "").body["total"], "refused transfers rolled back")
	assert.Equal(t, int64(1), svc.published.Load(), "no event for a refused transfer")
	assert.Equal(t, http.StatusNotFound, call(t, c, "GET", url+"/balance?id=9", "").code)
}

// storm fires n transfers at once between accounts 1 and 2, in random
// directions, over real HTTP, and returns the replies.
func storm(t testing.TB, url string, n int) []reply {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n}, Timeout: 2 * time.Minute}
	defer client.CloseIdleConnections()
	replies := make([]reply, n)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from, to := 1, 2
			if mrand.IntN(2) == 0 {
				from, to = 2, 1
			}
			<-gate
			replies[i] = call(t, client, "POST", url+"/transfer", transferBody(from, to, 1+mrand.IntN(10)))
		}()
	}
	close(gate)
	wg.Wait()
	return replies
}

// summary counts replies by status and returns the p50 and p99 latencies.
func summary(replies []reply) (codes map[int]int, p50, p99 time.Duration) {
	codes = map[int]int{}
	took := make([]time.Duration, 0, len(replies))
	for _, r := range replies {
		codes[r.code]++
		took = append(took, r.took)
	}
	slices.Sort(took)
	q := func(p float64) time.Duration { return took[int(math.Ceil(p*float64(len(took))))-1] }
	return codes, q(0.50), q(0.99)
}

// TestConcurrentTransfers fires 200 concurrent transfers at two accounts
// and checks: no 5xx, money neither created nor lost, one event per
// committed transfer. It prints the latency percentiles:
//
//	go test -v -run 'TestConcurrentTransfers' ./examples/service
func TestConcurrentTransfers(t *testing.T) {
	const n = 200
	for _, backend := range []string{"postgres", "mysql", "sqlite"} {
		t.Run(backend, func(t *testing.T) {
			svc, url := start(t, backend)
			replies := storm(t, url, n)
			codes, p50, p99 := summary(replies)
			t.Logf("%s, %d concurrent transfers on 2 accounts, conflict keys from the request: statuses %v, p50 %v, p99 %v",
				backend, n, codes, p50.Round(time.Millisecond), p99.Round(time.Millisecond))
			for code, k := range codes {
				assert.Less(t, code, 500, "%d responses of %d", k, code)
			}
			assert.Equal(t, n, codes[http.StatusOK]+codes[http.StatusUnprocessableEntity])
			assert.Equal(t, 2000.0, call(t, http.DefaultClient, "GET", url+"/balance", "").body["total"], "money created or lost")
			assert.Equal(t, int64(codes[http.StatusOK]), svc.published.Load(), "one event per committed transfer")
		})
	}
}

// BenchmarkStorm measures the same storm of 200 concurrent transfers on
// PostgreSQL, with the conflict keys the service takes from the request and
// without them (--no-keys), where every transfer conflicts in the database
// and more requests than the pool's 10 connections wait at once. It reports
// the latency percentiles of the requests; each storm must keep the money
// and answer only 200, 422, or 503 (gave up under contention).
//
//	go test -run '^$' -bench Storm -benchtime 1x ./examples/service
func BenchmarkStorm(b *testing.B) {
	const n = 200
	for _, c := range []struct {
		name string
		args []string
	}{{"keys", nil}, {"no-keys", []string{"--no-keys"}}} {
		b.Run(c.name, func(b *testing.B) {
			svc, url := start(b, "postgres", c.args...)
			var all []reply
			published := int64(0)
			for range b.N {
				replies := storm(b, url, n)
				codes, _, _ := summary(replies)
				require.Equal(b, n, codes[http.StatusOK]+codes[http.StatusUnprocessableEntity]+codes[http.StatusServiceUnavailable],
					"statuses %v: only 200, 422 and 503 are expected", codes)
				require.Equal(b, 2000.0, call(b, http.DefaultClient, "GET", url+"/balance", "").body["total"], "money created or lost")
				published += int64(codes[http.StatusOK])
				require.Equal(b, published, svc.published.Load(), "events for the committed transfers")
				all = append(all, replies...)
			}
			codes, p50, p99 := summary(all)
			b.ReportMetric(float64(p50.Milliseconds()), "p50-ms")
			b.ReportMetric(float64(p99.Milliseconds()), "p99-ms")
			b.ReportMetric(float64(codes[http.StatusServiceUnavailable])/float64(len(all))*100, "%503")
			b.Logf("%s: statuses %v", c.name, codes)
		})
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--backend", "oracle"},
		{"--accounts", "1"},
		{"--max-conns", "0"},
		{"--table", "x; DROP TABLE y"},
		{"--nope"},
	} {
		assert.Error(t, run(context.Background(), args, &bytes.Buffer{}), "%v", args)
	}
}
