package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/txnkit/txn"
)

// config is everything the command line sets.
type config struct {
	backend     string
	dsn         string
	workers     int
	conns       int
	accounts    int
	duration    time.Duration
	isolation   string
	lockOrder   string
	policies    []string
	compare     bool
	rounds      int
	base        time.Duration
	cap         time.Duration
	maxAttempts int
	txnTimeout  time.Duration
	sqliteBegin string
	jsonPath    string
	plotPath    string
	tablePrefix string
	seed        uint64
	quiet       bool
	shape       shapeConfig // shapes.go
}

// Defaults of the flags.
const (
	defaultBackend     = "sqlite"
	defaultWorkers     = 8
	defaultAccounts    = 16
	defaultDuration    = 5 * time.Second
	defaultIsolation   = "serializable"
	defaultLockOrder   = "sorted"
	defaultPolicy      = "adaptive"
	defaultRounds      = 5
	defaultTxnTimeout  = 10 * time.Second
	defaultSQLiteBegin = "immediate"
	defaultTablePrefix = "txnbench_"
)

// Backend names accepted by --backend.
const (
	backendSQLite   = "sqlite"
	backendPostgres = "postgres"
	backendMySQL    = "mysql"
	backendMongoDB  = "mongodb"
)

// backendNames returns the values --backend accepts.
func backendNames() []string {
	return []string{backendSQLite, backendPostgres, backendMySQL, backendMongoDB}
}

// isolationNames returns the values --isolation accepts.
func isolationNames() []string {
	return []string{"default", "read-committed", "repeatable-read", "serializable", "snapshot"}
}

// validPrefix reports whether p is txnbench_ followed by lower-case
// letters, digits and underscores, safe to splice into SQL.
func validPrefix(p string) bool {
	rest, ok := strings.CutPrefix(p, defaultTablePrefix)
	if !ok {
		return false
	}
	for _, r := range rest {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// parseFlags parses args into a config, checking every value. Errors name
// the flag and the accepted values. -h prints the usage to out and returns
// flag.ErrHelp.
func parseFlags(args []string, out io.Writer) (config, error) {
	c := config{}
	fs := flag.NewFlagSet("txnbench", flag.ContinueOnError)
	// Errors are reported by the caller, in one line; only -h prints the
	// usage.
	fs.SetOutput(io.Discard)
	var policy string
	fs.StringVar(&c.backend, "backend", defaultBackend, "database: "+strings.Join(backendNames(), ", "))
	fs.StringVar(&c.dsn, "dsn", "", "data source name (default: $TXN_PG_DSN or "+defaultPostgresDSN+" for postgres,\n$TXN_MYSQL_DSN or "+defaultMySQLDSN+" for mysql,\n$TXN_MONGODB_URI or "+defaultMongoURI+" for mongodb,\na new file in a temporary directory for sqlite)")
	fs.IntVar(&c.workers, "workers", defaultWorkers, "concurrent workers, each running one transfer at a time")
	fs.IntVar(&c.conns, "conns", 0, "database connections in the pool (0: one per worker)")
	fs.IntVar(&c.accounts, "accounts", defaultAccounts, "number of accounts; fewer accounts make hotter rows (at least 2)")
	fs.DurationVar(&c.duration, "duration", defaultDuration, "measured time of each configuration (with --compare, of each policy and of the baseline)")
	fs.StringVar(&c.isolation, "isolation", defaultIsolation, "isolation level: default (the server's own), read-committed, repeatable-read or serializable;\nSQLite is always serializable; MongoDB takes default or snapshot (read concern), and snapshot is its default")
	fs.StringVar(&c.lockOrder, "lock-order", defaultLockOrder, "order a transfer touches its two accounts: sorted (by id) or random (makes deadlocks)")
	fs.StringVar(&policy, "policy", "", "retry policy, or a comma-separated list with --compare: "+strings.Join(policyNames(), ", ")+"\n(default "+defaultPolicy+"; with --compare, all of them)")
	fs.BoolVar(&c.compare, "compare", false, "run several policies and a one-worker serial baseline, interleaved in rounds,\nand report each policy's goodput as a ratio to the baseline")
	fs.IntVar(&c.rounds, "rounds", defaultRounds, "with --compare, the number of rounds the duration is split into")
	fs.DurationVar(&c.base, "backoff-base", txn.DefaultBackoffBase, "backoff base (first retry's ceiling; the constant policy's delay)")
	fs.DurationVar(&c.cap, "backoff-cap", txn.DefaultBackoffCap, "backoff cap (largest delay)")
	fs.IntVar(&c.maxAttempts, "max-attempts", 0, "attempts per transfer before giving up (0: unlimited, bounded by --txn-timeout)")
	fs.DurationVar(&c.txnTimeout, "txn-timeout", defaultTxnTimeout, "deadline of one transfer, retries included")
	fs.StringVar(&c.sqliteBegin, "sqlite-begin", defaultSQLiteBegin, "SQLite transactions begin immediate (take the write lock at BEGIN) or deferred\n(upgrade at the first write, failing with SQLITE_BUSY or SQLITE_BUSY_SNAPSHOT under contention)")
	fs.StringVar(&c.jsonPath, "json", "", "write the results as JSON to this file (\"-\": to standard output, the table then goes to standard error)")
	fs.StringVar(&c.plotPath, "plot", "", "draw goodput and p99 latency per policy into this SVG file")
	fs.StringVar(&c.tablePrefix, "table-prefix", defaultTablePrefix, "prefix of the tables txnbench drops and creates (must start with txnbench_)")
	fs.Uint64Var(&c.seed, "seed", 0, "seed of the workload's random choices and of the backoff jitter (0: random)")
	fs.BoolVar(&c.quiet, "quiet", false, "no progress output")
	c.shape.register(fs)
	c.shape.args = args
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: txnbench [flags]\n\n"+
			"Runs a bank-transfer workload (read two balances, update both, insert a ledger row)\n"+
			"through txn and reports goodput, attempts per commit, latency and an invariant check.\n"+
			"With no flags: %d workers on %d accounts of an SQLite database in a temporary directory for %v.\n\nFlags:\n",
			defaultWorkers, defaultAccounts, defaultDuration)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(out)
			fs.Usage()
		}
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q (all settings are flags; see -h)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	switch {
	case policy != "":
		c.policies = strings.Split(policy, ",")
	case c.compare:
		c.policies = comparedPolicyNames()
	default:
		c.policies = []string{defaultPolicy}
	}
	if err := c.check(set); err != nil {
		return c, err
	}
	if c.dsn == "" {
		c.dsn = defaultDSN(c.backend)
	}
	return c, nil
}

// check validates c; set holds the flags given on the command line.
func (c *config) check(set map[string]bool) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !slices.Contains(backendNames(), c.backend) {
		bad("--backend %q: want one of %s", c.backend, strings.Join(backendNames(), ", "))
	}
	if c.workers < 1 {
		bad("--workers %d: want at least 1", c.workers)
	}
	if c.conns < 0 {
		bad("--conns %d: want 0 (one per worker) or more", c.conns)
	}
	if c.accounts < 2 {
		bad("--accounts %d: a transfer needs two accounts, want at least 2", c.accounts)
	}
	if c.duration <= 0 {
		bad("--duration %v: want a positive duration such as 5s", c.duration)
	}
	if c.backend == backendMongoDB && !set["isolation"] {
		c.isolation = "snapshot"
	}
	switch {
	case !slices.Contains(isolationNames(), c.isolation):
		bad("--isolation %q: want one of %s", c.isolation, strings.Join(isolationNames(), ", "))
	case c.backend != backendMongoDB && c.isolation == "snapshot":
		bad("--isolation snapshot: only for --backend mongodb")
	case c.backend == backendSQLite && c.isolation != "serializable" && c.isolation != "default":
		bad("--isolation %q: SQLite transactions are always serializable; use serializable or default", c.isolation)
	case c.backend == backendMongoDB && c.isolation != "snapshot" && c.isolation != "default":
		bad("--isolation %q: MongoDB transactions take default or snapshot (their read concern)", c.isolation)
	}
	c.shape.check(c, bad)
	if c.lockOrder != "sorted" && c.lockOrder != "random" {
		bad("--lock-order %q: want sorted or random", c.lockOrder)
	}
	seen := map[string]bool{}
	for i, p := range c.policies {
		p = strings.TrimSpace(p)
		c.policies[i] = p
		switch {
		case p == "":
			bad("--policy: empty name in %q", strings.Join(c.policies, ","))
		case findPolicy(p) == nil:
			bad("--policy %q: want one of %s", p, strings.Join(policyNames(), ", "))
		case seen[p]:
			bad("--policy %q: listed twice", p)
		}
		seen[p] = true
	}
	if !c.compare && len(c.policies) > 1 {
		bad("--policy %q: several policies need --compare", strings.Join(c.policies, ","))
	}
	if c.rounds < 1 {
		bad("--rounds %d: want at least 1", c.rounds)
	} else if set["rounds"] && !c.compare {
		bad("--rounds: only meaningful with --compare")
	}
	if c.base < 0 {
		bad("--backoff-base %v: want zero or more", c.base)
	}
	if c.cap < c.base {
		bad("--backoff-cap %v: want at least --backoff-base (%v)", c.cap, c.base)
	}
	if c.maxAttempts < 0 {
		bad("--max-attempts %d: want 0 (unlimited) or more", c.maxAttempts)
	}
	if c.txnTimeout <= 0 {
		bad("--txn-timeout %v: want a positive duration", c.txnTimeout)
	}
	if c.sqliteBegin != "immediate" && c.sqliteBegin != "deferred" {
		bad("--sqlite-begin %q: want immediate or deferred", c.sqliteBegin)
	} else if set["sqlite-begin"] && c.backend != backendSQLite {
		bad("--sqlite-begin: only meaningful with --backend sqlite")
	}
	if !validPrefix(c.tablePrefix) {
		bad("--table-prefix %q: want txnbench_ followed by lower-case letters, digits or _", c.tablePrefix)
	}
	if c.jsonPath != "" && c.jsonPath == c.plotPath {
		bad("--json and --plot name the same file %q", c.jsonPath)
	}
	return errors.Join(errs...)
}

// defaultDSN returns the DSN used when --dsn is not given; "" for SQLite
// means a new temporary database.
func defaultDSN(backend string) string {
	switch backend {
	case backendPostgres:
		if v := os.Getenv("TXN_PG_DSN"); v != "" {
			return v
		}
		return defaultPostgresDSN
	case backendMySQL:
		if v := os.Getenv("TXN_MYSQL_DSN"); v != "" {
			return v
		}
		return defaultMySQLDSN
	case backendMongoDB:
		if v := os.Getenv("TXN_MONGODB_URI"); v != "" {
			return v
		}
		return defaultMongoURI
	}
	return ""
}

// Default server addresses, those of the development machines.
const (
	defaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	defaultMySQLDSN    = "root@tcp(127.0.0.1:3306)/test"
	defaultMongoURI    = "mongodb://127.0.0.1:27017/?replicaSet=rs0"
)

// connections returns the size of the connection pool.
func (c *config) connections() int {
	if c.conns > 0 {
		return c.conns
	}
	return c.workers
}
