package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	mathrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/testdb"
)

// runArgs runs the command with args and returns its exit status, stdout
// and stderr.
func runArgs(t *testing.T, open storeOpener, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	if open == nil {
		open = openStore
	}
	// Tests never write the default plot into the shared temporary
	// directory.
	if !slices.ContainsFunc(args, func(a string) bool { return a == "--plot" || strings.HasPrefix(a, "--plot=") }) {
		args = append([]string{"--plot", ""}, args...)
	}
	code := runWith(ctx, args, &out, &errOut, open)
	return code, out.String(), errOut.String()
}

// TestDefaultRun runs the default configuration (SQLite, deferred BEGIN,
// the plain arm then the library's policies) briefly and checks what the
// first command of the README promises: the run without the library loses
// transfers to SQLITE_BUSY, the library's policies lose none, and the
// invariant holds; the table says what was run, and the JSON and SVG files
// are written.
func TestDefaultRun(t *testing.T) {
	dir := t.TempDir()
	jsonPath, svgPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.svg")
	code, out, errOut := runArgs(t, nil, "--duration", "600ms", "--json", jsonPath, "--plot", svgPath)
	require.Equal(t, exitOK, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	for _, col := range []string{"policy", "commits/s", "attempts/commit", "p50", "p99", "failed"} {
		assert.Contains(t, out, col)
	}
	assert.Contains(t, out, "BEGIN DEFERRED")
	assert.Regexp(t, `\n  plain +without txn: the same transaction hand-written on the driver, run once, no retry`, out,
		"the table says what the row without the library is")
	assert.Contains(t, out, "invariant: ok")
	assert.Contains(t, out, "plot: "+svgPath)
	assert.Contains(t, errOut, "txnbench: each first warms up its own Runner for 60ms (not measured)", "progress lines go to stderr")
	for _, name := range []string{"plain", "full", "adaptive"} {
		assert.Contains(t, errOut, "txnbench  warm-up    "+name+" ", "every arm warms up its own Runner")
	}

	var rep report
	b, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &rep))
	assert.True(t, rep.Invariant.OK, "%+v", rep.Invariant)
	assert.Equal(t, "deferred", rep.SQLiteBegin)
	require.Len(t, rep.Results, 3)
	plain := rep.Results[0]
	assert.Equal(t, plainName, plain.Policy)
	assert.Positive(t, plain.Failed+plain.Retries, "without the library, contended transfers fail: %+v", plain)
	assert.Zero(t, plain.Retries, "the plain arm never retries")
	assert.Contains(t, out, "failures of plain: SQLITE_BUSY")
	for _, res := range rep.Results[1:] {
		assert.Zero(t, res.Failed, "%s: the library loses no transfer: %s", res.Policy, res.FirstError)
		assert.Positive(t, res.Commits, res.Policy)
		assert.GreaterOrEqual(t, res.Attempts, res.Commits, "attempts count every execution of fn")
	}
	assert.Equal(t, []string{"plain", "full", "adaptive"}, []string{rep.Results[0].Policy, rep.Results[1].Policy, rep.Results[2].Policy})
	assert.Equal(t, rep.Invariant.LedgerRows, rep.Invariant.Commits)
	assert.Nil(t, rep.Baseline)

	svg, err := os.ReadFile(svgPath)
	require.NoError(t, err)
	assertSVG(t, svg, "adaptive", "plain (no txn)", "failed")
}

// TestSQLiteCompare runs two policies against the serial baseline,
// interleaved, with deferred BEGIN so that retries happen, and checks the
// JSON written to stdout.
func TestSQLiteCompare(t *testing.T) {
	code, out, errOut := runArgs(t, nil, "--compare", "--policy", "none,decorrelated", "--rounds", "2",
		"--duration", "200ms", "--workers", "4", "--accounts", "2", "--sqlite-begin", "deferred",
		"--lock-order", "random", "--json", "-", "--quiet", "--seed", "7")
	require.Equal(t, exitOK, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	assert.Contains(t, errOut, "vs serial", "the table goes to stderr when JSON goes to stdout")
	assert.NotContains(t, errOut, "txnbench  ", "--quiet: no progress")

	var rep report
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
	require.NotNil(t, rep.Baseline)
	assert.Equal(t, 1, rep.Baseline.Workers)
	assert.Positive(t, rep.Baseline.Commits)
	require.Len(t, rep.Results, 2)
	assert.Equal(t, "none", rep.Results[0].Policy)
	assert.Equal(t, "decorrelated", rep.Results[1].Policy)
	for _, r := range rep.Results {
		require.NotNil(t, r.RatioToBaseline, r.Policy)
		assert.InDelta(t, r.CommitsPerSecond/rep.Baseline.CommitsPerSecond, *r.RatioToBaseline, 1e-9)
		var retries int64
		for _, n := range r.RetryCauses {
			retries += n
		}
		assert.Equal(t, r.Retries, retries, "every retry has a cause")
	}
	assert.Equal(t, 2, rep.Rounds)
	assert.Equal(t, uint64(7), rep.Seed)
	assert.True(t, rep.Invariant.OK, "%+v", rep.Invariant)
}

// TestJSONShape pins the JSON field names that scripts read.
func TestJSONShape(t *testing.T) {
	code, out, errOut := runArgs(t, nil, "--compare", "--policy", "full", "--rounds", "1",
		"--duration", "100ms", "--workers", "2", "--json", "-", "--quiet")
	require.Equal(t, exitOK, code, errOut)
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &m))
	for _, k := range []string{"backend", "workers", "connections", "accounts", "isolation", "lock_order", "duration",
		"rounds", "compare", "backoff_base", "backoff_cap", "max_attempts", "seed", "go_version", "started",
		"interrupted", "cold", "warmup", "warmups", "baseline", "results", "invariant"} {
		assert.Contains(t, m, k)
	}
	results, ok := m["results"].([]any)
	require.True(t, ok)
	require.Len(t, results, 1)
	r := results[0].(map[string]any)
	for _, k := range []string{"policy", "workers", "commits", "attempts", "retries", "failed", "commit_unknown", "rejected",
		"elapsed_seconds", "commits_per_second", "attempts_per_commit", "ratio_to_baseline", "latency_ms", "retry_causes",
		"failure_causes", "description"} {
		assert.Contains(t, r, k)
	}
	lat := r["latency_ms"].(map[string]any)
	for _, k := range []string{"p50", "p90", "p99", "max"} {
		assert.IsType(t, float64(0), lat[k])
	}
	inv := m["invariant"].(map[string]any)
	for _, k := range []string{"ok", "expected_sum", "sum", "accounts", "ledger_rows", "commits", "commit_unknown", "replay_mismatches", "problems"} {
		assert.Contains(t, inv, k)
	}
	assert.Equal(t, true, inv["ok"])
}

// lyingStore reports one transfer as committed without running it, so that
// the ledger has one row less than the reported commits.
type lyingStore struct {
	Store
}

func (s lyingStore) Bank(opts ...runnerOption) (TransferFunc, func() txn.AdmissionStats) {
	inner, stats := s.Store.Bank(opts...)
	var lied atomic.Bool
	return func(ctx context.Context, t transfer, callOpts ...callOption) error {
		if lied.CompareAndSwap(false, true) {
			return nil
		}
		return inner(ctx, t, callOpts...)
	}, stats
}

// TestInvariantFailureExitsNonZero checks that a run whose reported
// commits disagree with the database fails with status 1.
func TestInvariantFailureExitsNonZero(t *testing.T) {
	open := func(ctx context.Context, c *config) (Store, func(), error) {
		s, cleanup, err := openStore(ctx, c)
		if err != nil {
			return nil, nil, err
		}
		return lyingStore{s}, cleanup, nil
	}
	code, out, errOut := runArgs(t, open, "--duration", "100ms", "--workers", "1", "--policy", "adaptive", "--quiet", "--plot", "")
	assert.Equal(t, exitFailed, code)
	assert.Contains(t, out, "invariant: FAILED")
	assert.Contains(t, errOut, "ledger rows, but")
}

func TestCheckInvariant(t *testing.T) {
	ok := checkInvariant(totals{sum: 3 * initialBalance, accounts: 3, ledgerRows: 10}, 3, 10, 0)
	assert.True(t, ok.OK)
	assert.Empty(t, ok.Problems)
	assert.NotNil(t, ok.Problems, "an empty list in JSON, not null")

	// Two transfers ended with an unknown commit outcome: the ledger may
	// hold 10 to 12 rows.
	for rows := int64(10); rows <= 12; rows++ {
		assert.True(t, checkInvariant(totals{sum: 3 * initialBalance, accounts: 3, ledgerRows: rows}, 3, 10, 2).OK, rows)
	}
	assert.False(t, checkInvariant(totals{sum: 3 * initialBalance, accounts: 3, ledgerRows: 13}, 3, 10, 2).OK)
	assert.False(t, checkInvariant(totals{sum: 3 * initialBalance, accounts: 3, ledgerRows: 9}, 3, 10, 2).OK)

	bad := checkInvariant(totals{sum: 3*initialBalance - 5, accounts: 2, ledgerRows: 9, replayMismatches: 1}, 3, 10, 0)
	assert.False(t, bad.OK)
	assert.Len(t, bad.Problems, 4)
}

// TestFlagErrors checks that every bad command line exits with status 2
// and a message naming the flag and what it expects.
func TestFlagErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--backend", "oracle"}, `--backend "oracle": want one of sqlite, postgres, mysql, mongodb`},
		{[]string{"--workers", "0"}, "--workers 0: want at least 1"},
		{[]string{"--workers", "many"}, `--workers "many": want a whole number`},
		{[]string{"--workers"}, "--workers: needs a value, as in --workers VALUE"},
		{[]string{"--accounts", "1"}, "--accounts 1: a transfer needs two accounts, want at least 2"},
		{[]string{"--accounts", "1.5"}, `--accounts "1.5": want a whole number`},
		{[]string{"--duration", "0s"}, "--duration 0s: want a positive duration"},
		{[]string{"--duration", "5"}, `--duration "5": want a duration with a unit, such as 2s, 500ms or 1m30s`},
		{[]string{"--duration", "garbage"}, `--duration "garbage": want a duration with a unit, such as 2s, 500ms or 1m30s`},
		{[]string{"--txn-timeout", "soon"}, `--txn-timeout "soon": want a duration with a unit`},
		{[]string{"--backoff-base", "fast"}, `--backoff-base "fast": want a duration with a unit`},
		{[]string{"--seed", "-3"}, `--seed "-3": want a whole number from 0 to 18446744073709551615`},
		{[]string{"--compare=maybe"}, `--compare "maybe": want true or false`},
		{[]string{"--isolation", "dirty"}, `--isolation "dirty": want one of default, read-committed, repeatable-read, serializable, snapshot`},
		{[]string{"--isolation", "read-committed"}, `--isolation "read-committed": SQLite transactions are always serializable; use serializable or default`},
		{[]string{"--isolation", "snapshot"}, "--isolation snapshot: only for --backend mongodb"},
		{[]string{"--backend", "mongodb", "--isolation", "serializable"}, `--isolation "serializable": MongoDB transactions take default or snapshot`},
		{[]string{"--lock-order", "up"}, `--lock-order "up": want sorted or random`},
		{[]string{"--policy", "bogus"}, `--policy "bogus": want one of plain, none, constant, full, equal, decorrelated, adaptive, keyed`},
		{[]string{"--policy", "full,full"}, `--policy "full": listed twice`},
		{[]string{"--policy", "full,"}, `--policy "full,": empty name; want a comma-separated list of plain, none`},
		{[]string{"--policy", "full", "--rounds", "3"}, "--rounds: only meaningful with several policies or --compare"},
		{[]string{"--policy", "full,dbkeyed"}, "--policy dbkeyed: holds its keys in the database, which only --backend postgres and mysql can; sqlite cannot"},
		{[]string{"--backend", "mongodb", "--policy", "dbkeyed"}, "--policy dbkeyed: holds its keys in the database, which only --backend postgres and mysql can; mongodb cannot"},
		{[]string{"--compare", "--rounds", "0"}, "--rounds 0: want at least 1"},
		{[]string{"--backoff-base", "10ms", "--backoff-cap", "1ms"}, "--backoff-cap 1ms: want at least --backoff-base (10ms)"},
		{[]string{"--max-attempts", "-1"}, "--max-attempts -1: want 0 (unlimited) or more"},
		{[]string{"--conns", "-1"}, "--conns -1: want 0 (one per worker) or more"},
		{[]string{"--txn-timeout", "0s"}, "--txn-timeout 0s: want a positive duration"},
		{[]string{"--sqlite-begin", "later"}, `--sqlite-begin "later": want deferred or immediate`},
		{[]string{"--backend", "mysql", "--sqlite-begin", "deferred"}, "--sqlite-begin: only meaningful with --backend sqlite"},
		{[]string{"--table-prefix", "txnbench_x; DROP"}, `--table-prefix "txnbench_x; DROP": want an SQL identifier: a letter or _, then letters, digits or _, at most 55 characters`},
		{[]string{"--table-prefix", "1x_"}, `--table-prefix "1x_": want an SQL identifier`},
		{[]string{"--table-prefix", ""}, `--table-prefix "": want an SQL identifier`},
		{[]string{"--table-prefix", strings.Repeat("a", 56)}, `--table-prefix "` + strings.Repeat("a", 56) + `": want an SQL identifier: a letter or _, then letters, digits or _, at most 55 characters`},
		{[]string{"--table-prefix", "bench-1_"}, `--table-prefix "bench-1_": want an SQL identifier`},
		{[]string{"--json", "a.json", "--plot", "a.json"}, `--json and --plot name the same file "a.json"; want two files`},
		{[]string{"--json", "/nonexistent/dir/x.json"}, "--json /nonexistent/dir/x.json: directory /nonexistent/dir does not exist; want a file path in an existing, writable directory"},
		{[]string{"--plot", "/nonexistent/dir/x.svg"}, "--plot /nonexistent/dir/x.svg: directory /nonexistent/dir does not exist; want a file path in an existing, writable directory"},
		{[]string{"--json", dir}, "--json " + dir + ": is a directory; want a file path"},
		{[]string{"--plot", dir}, "--plot " + dir + ": is a directory; want a file path"},
		{[]string{"--json", filepath.Join(file, "x.json")}, "--json " + filepath.Join(file, "x.json") + ": " + file + " is not a directory; want a file path"},
		{[]string{"--workers", "1000000"}, "--workers 1000000: want at most 100000"},
		{[]string{"--workers", "99999999999999999999"}, `--workers "99999999999999999999": want a whole number`},
		{[]string{"--accounts", "10000000000"}, "--accounts 10000000000: want at most 10000000"},
		{[]string{"--duration", "1ns"}, "--duration 1ns: want at least 10ms"},
		{[]string{"--duration", "1s", "--rounds", "100000000"}, "--rounds 100000000: cuts --duration 1s into slices of 10ns; want slices of at least 10ms, at most 100 rounds"},
		{[]string{"--compare", "--policy", "full", "--duration", "100ms", "--rounds", "11"}, "--rounds 11: cuts --duration 100ms into slices of 9.090909ms"},
		{[]string{"--timeline", "1ns"}, "--timeline 1ns: want an interval of at least 1ms"},
		{[]string{"--admission-trace", "1ns"}, "--admission-trace 1ns: want an interval of at least 1ms"},
		{[]string{"--hot-share", "abc"}, `--hot-share "abc": want a number from 0 to 1`},
		{[]string{"--hot-workers", "two"}, `--hot-workers "two": want a whole number`},
		{[]string{"--processes", "abc"}, `--processes "abc": want a whole number`},
		{[]string{"--processes", "100000", "--dsn", filepath.Join(dir, "x.db")}, "--processes 100000: want at most 256"},
		{[]string{"--policy", ""}, `--policy "": empty name; want a comma-separated list of plain, none`},
		{[]string{"--nope"}, "--nope: no such flag"},
		{[]string{"extra"}, `unexpected argument "extra" (all settings are flags`},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, out, errOut := runArgs(t, nil, c.args...)
			assert.Equal(t, exitUsage, code)
			assert.Empty(t, out)
			assert.Contains(t, errOut, "txnbench: "+c.want)
			assert.Contains(t, errOut, usageHintText)
			assert.NotContains(t, errOut, "Usage:", "errors are short; -h prints the usage")
			assert.NotContains(t, errOut, "connecting", "nothing runs")
		})
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "checking an output path leaves nothing behind")
}

// TestTablePrefixes checks that any SQL identifier is accepted as a table
// prefix, so that people sharing a database pick their own.
func TestTablePrefixes(t *testing.T) {
	for _, p := range []string{"txnbench_", "alice_", "Team2_", "_x", "b", strings.Repeat("a", 55)} {
		t.Run(p, func(t *testing.T) {
			c, err := parseFlags([]string{"--table-prefix", p}, io.Discard)
			require.NoError(t, err, p)
			assert.Equal(t, p, c.tablePrefix)
		})
	}
}

// TestOutputWriteError checks that a file that cannot be written after
// the run is reported under its own name, not a temporary file's.
func TestOutputWriteError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gone", "r.json")
	err := writeFileAtomic(path, []byte("{}"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "write "+path+": ")
	assert.NotContains(t, err.Error(), ".r.json.")
}

// TestFlagErrorsTogether checks that several mistakes are reported at once.
func TestFlagErrorsTogether(t *testing.T) {
	code, _, errOut := runArgs(t, nil, "--workers", "0", "--accounts", "1", "--lock-order", "x")
	assert.Equal(t, exitUsage, code)
	assert.Equal(t, 3, strings.Count(errOut, "txnbench: "), errOut)
}

func TestHelp(t *testing.T) {
	code, out, errOut := runArgs(t, nil, "-h")
	assert.Equal(t, exitOK, code)
	assert.Empty(t, errOut)
	assert.Contains(t, out, "Usage: txnbench")
	for _, name := range policyNames() {
		assert.Contains(t, out, name)
	}
	assert.Contains(t, out, "  -workers N\n")
	assert.Contains(t, out, "(default 8)")
	assert.NotContains(t, out, "-child", "the flag --processes gives its children is not listed")
}

func TestDefaults(t *testing.T) {
	c, err := parseFlags(nil, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, backendSQLite, c.backend)
	assert.Equal(t, "deferred", c.sqliteBegin, "the default run shows real SQLITE_BUSY")
	assert.Equal(t, defaultPlotPath(), c.plotPath, "the default run writes the plot")
	assert.Equal(t, strings.Split(defaultPolicies, ","), c.policies)
	assert.Equal(t, "", c.dsn, "SQLite defaults to a temporary database")
	assert.Equal(t, c.workers, c.connections())

	c, err = parseFlags([]string{"--compare"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, comparedPolicyNames(), c.policies, "--compare runs every policy but the opt-in ones")

	t.Setenv("TXN_PG_DSN", "")
	c, err = parseFlags([]string{"--backend", "postgres"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, defaultPostgresDSN, c.dsn)
	c, err = parseFlags([]string{"--backend", "mongodb"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "snapshot", c.isolation, "MongoDB's default isolation")
	t.Setenv("TXN_MYSQL_DSN", "u@tcp(h:1)/d")
	c, err = parseFlags([]string{"--backend", "mysql"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "u@tcp(h:1)/d", c.dsn)
}

// TestMongoUnreachable checks the message for a MongoDB that is not there.
func TestMongoUnreachable(t *testing.T) {
	code, _, errOut := runArgs(t, nil, "--backend", "mongodb", "--quiet",
		"--dsn", "mongodb://127.0.0.1:1/?replicaSet=rs0&serverSelectionTimeoutMS=300")
	assert.Equal(t, exitFailed, code)
	assert.Contains(t, errOut, "mongodb: cannot reach [127.0.0.1:1] (set --dsn or TXN_MONGODB_URI to a replica set)")
}

// TestMongo runs the workload on the replica set TXN_MONGODB_URI names. No
// MongoDB server can be installed on the development machines, so it is
// skipped without the variable, even with TXN_REQUIRE_DBS=1; the MongoDB
// store was checked by hand against txnmongo's wire-protocol test server.
func TestMongo(t *testing.T) {
	if os.Getenv("TXN_MONGODB_URI") == "" {
		t.Skip("TXN_MONGODB_URI not set: no MongoDB replica set to run on")
	}
	prefix := uniquePrefix(t)
	t.Cleanup(func() {
		c := config{backend: backendMongoDB, dsn: os.Getenv("TXN_MONGODB_URI"), workers: 1, tablePrefix: prefix, isolation: "default"}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := openMongo(ctx, &c)
		require.NoError(t, err)
		ms := s.(*mongoStore)
		assert.NoError(t, ms.accounts.Drop(ctx))
		assert.NoError(t, ms.ledger.Drop(ctx))
		assert.NoError(t, s.Close())
	})
	code, out, errOut := runArgs(t, nil, "--backend", "mongodb", "--compare", "--policy", "none,full",
		"--rounds", "2", "--duration", "400ms", "--workers", "8", "--accounts", "2",
		"--table-prefix", prefix, "--json", "-", "--quiet")
	require.Equal(t, exitOK, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	var rep report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	assert.True(t, rep.Invariant.OK, "%+v", rep.Invariant)
	assert.Equal(t, "snapshot", rep.Isolation)
	t.Logf("\n%s", errOut)
}

func TestPolicyTable(t *testing.T) {
	seen := map[string]bool{}
	params := policyParams{base: time.Millisecond, cap: time.Second}
	for _, p := range policyTable() {
		assert.False(t, seen[p.name], "duplicate policy %s", p.name)
		seen[p.name] = true
		assert.NotEmpty(t, p.help, p.name)
		require.NotNil(t, findPolicy(p.name))
		if p.plain {
			assert.Nil(t, p.runner, "the plain arm has no Runner")
			continue
		}
		r := txn.New[int](nopBackend{}, runnerOptions(&p, params, txn.NopObserver{}, 1)...)
		assert.NoError(t, r.Err(), p.name)
		require.NotNil(t, findPolicy(p.name))
		assert.Equal(t, p.name, findPolicy(p.name).name)
	}
	assert.Nil(t, findPolicy("nope"))
	assert.True(t, findPolicy(plainName).plain)
}

// nopBackend lets TestPolicyTable build Runners to validate options.
type nopBackend struct{}

func (nopBackend) Begin(context.Context, []txn.BeginOption[int]) (int, error) { return 0, nil }
func (nopBackend) Commit(context.Context, int) error                          { return nil }
func (nopBackend) Rollback(context.Context, int) error                        { return nil }
func (nopBackend) Classify(error) txn.Class                                   { return txn.ClassPermanent }

// BeginLocked lets the dbkeyed policy's Runner (txn.DatabaseKeys) be built.
func (nopBackend) BeginLocked(context.Context, []txn.BeginOption[int], []string) (int, func(context.Context), error) {
	return 0, nil, nil
}

func TestSchedule(t *testing.T) {
	s := schedule(3, 4)
	require.Len(t, s, 4)
	firsts := map[int]bool{}
	for _, round := range s {
		assert.ElementsMatch(t, []int{0, 1, 2}, round, "every arm runs once a round")
		firsts[round[0]] = true
	}
	assert.Len(t, firsts, 3, "no arm always runs first")
}

func TestSummarize(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(101-i)*time.Millisecond)
	}
	s := summarize(lat)
	assert.Equal(t, 50*time.Millisecond, s.P50)
	assert.Equal(t, 90*time.Millisecond, s.P90)
	assert.Equal(t, 99*time.Millisecond, s.P99)
	assert.Equal(t, 100*time.Millisecond, s.Max)
	assert.Equal(t, 100*time.Millisecond, lat[0], "input not reordered")
	assert.Equal(t, latencyStats{}, summarize(nil))
}

func TestTransferOrder(t *testing.T) {
	tr := transfer{from: 2, to: 1, amount: 5, sorted: true}
	first, second := tr.order()
	assert.Equal(t, [2]int64{1, 2}, [2]int64{first, second})
	tr.sorted = false
	first, second = tr.order()
	assert.Equal(t, [2]int64{2, 1}, [2]int64{first, second})
	assert.Equal(t, int64(-5), tr.delta(2))
	assert.Equal(t, int64(5), tr.delta(1))
}

// TestNextTransfer checks that random transfers name two distinct accounts
// in range.
func TestNextTransfer(t *testing.T) {
	w := workload{accounts: 3}
	rng := mathrand.New(mathrand.NewPCG(1, 2))
	seen := map[[2]int64]bool{}
	for range 1000 {
		tr := w.next(rng)
		assert.NotEqual(t, tr.from, tr.to)
		assert.True(t, tr.from >= 1 && tr.from <= 3 && tr.to >= 1 && tr.to <= 3, "%+v", tr)
		assert.True(t, tr.amount >= 1 && tr.amount <= 100)
		seen[[2]int64{tr.from, tr.to}] = true
	}
	assert.Len(t, seen, 6, "every ordered pair occurs")
}

func TestDSNSets(t *testing.T) {
	assert.True(t, dsnSets("postgres://h/db?pool_max_conns=3", "pool_max_conns"))
	assert.True(t, dsnSets("postgres://h/db?sslmode=disable&pool_max_conns=3", "pool_max_conns"))
	assert.True(t, dsnSets("host=h pool_max_conns=3", "pool_max_conns"))
	assert.False(t, dsnSets("postgres://h/db?xpool_max_conns=3", "pool_max_conns"))
	assert.False(t, dsnSets("postgres://h/db", "pool_max_conns"))
}

func TestPlotSVG(t *testing.T) {
	ratio := 0.5
	rep := &report{Backend: "sqlite", Workers: 4, Accounts: 2, Isolation: "serializable", LockOrder: "sorted",
		Baseline: &result{Policy: "serial", CommitsPerSecond: 100},
		Results: []result{
			{Policy: "none", CommitsPerSecond: 50, RatioToBaseline: &ratio, LatencyMs: latencyMs{P99: 12.5}},
			{Policy: "a<b&c", CommitsPerSecond: 0, LatencyMs: latencyMs{}},
		}}
	assertSVG(t, plotSVG(rep), "none", "a&lt;b&amp;c", "serial goodput (dashed line)", "stroke-dasharray")
	assertSVG(t, plotSVG(&report{}))
}

// assertSVG checks that b is well-formed SVG containing each of want.
func assertSVG(t *testing.T, b []byte, want ...string) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(b))
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "well-formed XML")
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	assert.Equal(t, "svg", root)
	for _, w := range want {
		assert.Contains(t, string(b), w)
	}
	assert.Contains(t, string(b), "<rect")
	assert.NotContains(t, string(b), "NaN")
	assert.NotContains(t, string(b), "Inf")
}

// requireServer skips the test (fails it with TXN_REQUIRE_DBS=1) when the
// backend's server cannot be reached.
func requireServer(t *testing.T, backend string) string {
	t.Helper()
	dsn := defaultDSN(backend)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var err error
	switch backend {
	case backendPostgres:
		var pool *pgxpool.Pool
		if pool, err = pgxpool.New(ctx, dsn); err == nil {
			err = pool.Ping(ctx)
			pool.Close()
		}
	case backendMySQL:
		var db *sql.DB
		if db, err = sql.Open("mysql", dsn); err == nil {
			err = db.PingContext(ctx)
			_ = db.Close()
		}
	}
	if err != nil {
		env := map[string]string{backendPostgres: testdb.PostgresEnv, backendMySQL: testdb.MySQLEnv}[backend]
		testdb.Unreachable(t, backend, env, err)
	}
	return dsn
}

// uniquePrefix returns a table prefix no other test run uses.
func uniquePrefix(t *testing.T) string {
	b := make([]byte, 4)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return "txnbench_test_" + hex.EncodeToString(b) + "_"
}

// TestServers runs the workload briefly on PostgreSQL and MySQL/MariaDB,
// without the library and with it, on tables of its own, and drops them
// afterwards. Under SERIALIZABLE,
// PostgreSQL's transfers fail with 40001; MySQL's, with random lock order,
// deadlock (1213). (Random order on PostgreSQL waits deadlock_timeout, 1 s,
// per deadlock: too slow for a test.)
func TestServers(t *testing.T) {
	for _, c := range []struct{ backend, order string }{{backendPostgres, "sorted"}, {backendMySQL, "random"}} {
		backend := c.backend
		t.Run(backend, func(t *testing.T) {
			dsn := requireServer(t, backend)
			prefix := uniquePrefix(t)
			t.Cleanup(func() { dropTables(t, backend, dsn, prefix) })
			code, out, errOut := runArgs(t, nil, "--backend", backend, "--compare", "--policy", "plain,none,full",
				"--rounds", "2", "--duration", "400ms", "--workers", "8", "--accounts", "2", "--lock-order", c.order,
				"--table-prefix", prefix, "--json", "-", "--quiet")
			require.Equal(t, exitOK, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
			var rep report
			require.NoError(t, json.Unmarshal([]byte(out), &rep))
			assert.True(t, rep.Invariant.OK, "%+v", rep.Invariant)
			assert.Positive(t, rep.Baseline.Commits)
			require.Len(t, rep.Results, 3)
			plain := rep.Results[0]
			assert.Equal(t, plainName, plain.Policy)
			assert.Positive(t, plain.Failed, "without the library, 8 workers on 2 accounts lose transfers: %+v", plain)
			assert.Positive(t, plain.Commits)
			var retries int64
			for _, r := range rep.Results[1:] {
				assert.Positive(t, r.Commits, r.Policy)
				assert.Zero(t, r.Failed, "%s: %s", r.Policy, r.FirstError)
				retries += r.Retries
			}
			assert.Positive(t, retries, "8 workers on 2 accounts conflict")
			t.Logf("\n%s", errOut)
		})
	}
}

// dropTables removes the tables of a test run.
func dropTables(t *testing.T, backend, dsn, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stmts := []string{"DROP TABLE IF EXISTS " + prefix + "ledger", "DROP TABLE IF EXISTS " + prefix + "accounts"}
	switch backend {
	case backendPostgres:
		pool, err := pgxpool.New(ctx, dsn)
		require.NoError(t, err)
		defer pool.Close()
		for _, s := range stmts {
			_, err := pool.Exec(ctx, s)
			assert.NoError(t, err)
		}
	case backendMySQL:
		db, err := sql.Open("mysql", dsn)
		require.NoError(t, err)
		defer db.Close()
		for _, s := range stmts {
			_, err := db.ExecContext(ctx, s)
			assert.NoError(t, err)
		}
	}
}

// closedPort returns a loopback address where nothing listens.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// TestConnectErrors checks that a server that cannot be reached and a
// server that refuses the role or user get different messages, against
// the real PostgreSQL and MariaDB.
func TestConnectErrors(t *testing.T) {
	t.Run("postgres unreachable", func(t *testing.T) {
		addr := closedPort(t)
		code, _, errOut := runArgs(t, nil, "--backend", "postgres", "--quiet",
			"--dsn", "postgres://postgres@"+addr+"/test?sslmode=disable&connect_timeout=10")
		assert.Equal(t, exitFailed, code)
		assert.Contains(t, errOut, "postgres: server unreachable at "+addr+" (is it running? set --dsn or TXN_PG_DSN)")
		assert.NotContains(t, errOut, "reached")
	})
	t.Run("postgres role refused", func(t *testing.T) {
		u, err := url.Parse(requireServer(t, backendPostgres))
		require.NoError(t, err)
		u.User = url.User("txnbench_no_such_role")
		code, _, errOut := runArgs(t, nil, "--backend", "postgres", "--quiet", "--dsn", u.String())
		assert.Equal(t, exitFailed, code)
		assert.Contains(t, errOut, "postgres: reached the server at "+u.Host+`, but it refused the connection of role "txnbench_no_such_role"`)
		assert.Contains(t, errOut, `role "txnbench_no_such_role" does not exist`)
		assert.NotContains(t, errOut, "unreachable")
	})
	t.Run("mysql unreachable", func(t *testing.T) {
		addr := closedPort(t)
		code, _, errOut := runArgs(t, nil, "--backend", "mysql", "--quiet", "--dsn", "root@tcp("+addr+")/test?timeout=10s")
		assert.Equal(t, exitFailed, code)
		assert.Contains(t, errOut, "mysql: server unreachable at "+addr+" (is it running? set --dsn or TXN_MYSQL_DSN)")
		assert.NotContains(t, errOut, "reached")
	})
	t.Run("mysql user refused", func(t *testing.T) {
		cfg, err := mysql.ParseDSN(requireServer(t, backendMySQL))
		require.NoError(t, err)
		cfg.User, cfg.Passwd = "txnbench_no_such_user", ""
		code, _, errOut := runArgs(t, nil, "--backend", "mysql", "--quiet", "--dsn", cfg.FormatDSN())
		assert.Equal(t, exitFailed, code)
		assert.Contains(t, errOut, "mysql: reached the server at "+cfg.Addr+`, but it refused the connection of user "txnbench_no_such_user"`)
		assert.Contains(t, errOut, "Access denied")
		assert.NotContains(t, errOut, "unreachable")
	})
}

// TestProgressDraining checks that once a slice's measured time has ended,
// the progress line says so and counts the transfers still under way,
// instead of a clock stopped at the end; and that the final line gives the
// measured time and the drain apart.
func TestProgressDraining(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, false)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p.now = func() time.Time { return now }
	a := &arm{obs: &counter{}}
	a.commits.Store(30)
	a.obs.attempts.Store(45)
	a.inFlight.Store(3)
	p.mu.Lock()
	p.arm, p.label, p.started, p.length = a, "full", now.Add(-3*time.Second), time.Second
	p.mu.Unlock()
	p.draw()
	assert.Regexp(t, `txnbench  full +1\.0s ended 2\.0s ago, draining 3 transfers still under way +30 commits +10/s  1\.50 attempts/commit  0 failed`, buf.String())
	assert.NotContains(t, buf.String(), "/1.0s", "no clock stopped at the end of the measured time")
	buf.Reset()
	a.inFlight.Store(1)
	p.draw()
	assert.Contains(t, buf.String(), "draining 1 transfer still under way")
	buf.Reset()
	p.done()
	assert.Regexp(t, `txnbench  full +1\.0s, then 2\.0s draining +30 commits +10/s`, buf.String(),
		"the rate is over the whole time shown")
}

// TestProgressWarmup checks the warm-up's final line: its time and rate
// agree with each other and it says it is not measured.
func TestProgressWarmup(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, false)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p.now = func() time.Time { return now }
	a := &arm{obs: &counter{}}
	a.commits.Store(200)
	a.obs.attempts.Store(200)
	p.mu.Lock()
	p.arm, p.label, p.started, p.length = a, "warm-up (not measured)", now.Add(-2*time.Second), 2*time.Second
	p.mu.Unlock()
	p.done()
	assert.Regexp(t, `txnbench  warm-up \(not measured\) +2\.0s +200 commits +100/s  1\.00 attempts/commit`, buf.String())
}

// TestPlotLayout lays out plots of 1, 2, 5 and 8 policies with long names
// and checks that no two pieces of text overlap, that rotated axis labels
// are far enough apart, and that everything fits in the canvas.
func TestPlotLayout(t *testing.T) {
	names := []string{"plain", "none", "constant", "full", "equal", "decorrelated", "adaptive", "keyed"}
	for _, n := range []int{1, 2, 5, 8} {
		for _, compare := range []bool{false, true} {
			rep := &report{Backend: "postgres", Workers: 64, Accounts: 2, Isolation: "repeatable-read", LockOrder: "random",
				Duration: "10s", Compare: compare}
			if compare {
				rep.Baseline = &result{Policy: "serial", CommitsPerSecond: 1000}
			}
			for i := range n {
				ratio := float64(i+1) / 4
				res := result{Policy: names[(i+5)%len(names)], CommitsPerSecond: float64(i+1) * 1234.5, Commits: 100, Failed: int64(i % 2 * 50),
					ElapsedSeconds: 1, LatencyMs: latencyMs{P99: float64(n-i) * 33.3}}
				if compare {
					res.RatioToBaseline = &ratio
				}
				rep.Results = append(rep.Results, res)
			}
			t.Run(fmt.Sprintf("%d policies compare=%v", n, compare), func(t *testing.T) {
				c := drawPlot(rep)
				assertSVG(t, c.bytes(), rep.Results[0].Policy)
				var flat []textBox
				var rotated []textBox
				for _, b := range c.texts {
					assert.True(t, b.x0 >= 0 && b.y0 >= 0 && b.x1 <= c.width && b.y1 <= c.height,
						"%s %q at (%.0f,%.0f)-(%.0f,%.0f) leaves the %.0f×%.0f canvas", b.role, b.text, b.x0, b.y0, b.x1, b.y1, c.width, c.height)
					if b.rotatedDeg == 0 {
						flat = append(flat, b)
					} else if b.role == "x-label" {
						rotated = append(rotated, b)
					}
				}
				for i, a := range flat {
					for _, b := range flat[i+1:] {
						overlap := a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1
						assert.False(t, overlap, "%s %q overlaps %s %q", a.role, a.text, b.role, b.text)
					}
				}
				// Rotated labels are parallel: the distance between two
				// neighbours is their horizontal spacing times sin 45°.
				for i := 1; i < len(rotated); i++ {
					if rotated[i].x1 < rotated[i-1].x1 {
						continue // the other panel
					}
					gap := (rotated[i].x1 - rotated[i-1].x1) * math.Sqrt2 / 2
					assert.GreaterOrEqual(t, gap, textSize+2, "rotated labels %q and %q", rotated[i-1].text, rotated[i].text)
				}
				for _, b := range flat {
					if b.role == "x-label" {
						assert.Empty(t, rotated, "labels are all flat or all rotated")
					}
				}
			})
		}
	}
}

// TestConnsAboveWorkers: a pool larger than the load is what many services
// run, so --conns above --workers is accepted as it is.
func TestConnsAboveWorkers(t *testing.T) {
	c, err := parseFlags([]string{"--workers", "4", "--conns", "9"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, 9, c.conns)
}

// TestSQLiteMissingDirectory: a --dsn in a directory that does not exist is
// reported as such, naming the flag, instead of SQLite's "out of memory
// (14)".
func TestSQLiteMissingDirectory(t *testing.T) {
	c, err := parseFlags([]string{"--dsn", "/nonexistent/dir/x.db"}, io.Discard)
	require.NoError(t, err)
	_, _, err = openSQLite(context.Background(), &c)
	require.EqualError(t, err, "sqlite: --dsn /nonexistent/dir/x.db: directory /nonexistent/dir does not exist; want the path of a database file in an existing directory")
}
