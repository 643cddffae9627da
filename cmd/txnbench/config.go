package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
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
	// cold measures every arm from a fresh Runner, without its warm-up.
	cold bool
	// timeline is the interval of the commit timeline (0: none).
	timeline time.Duration
	// admissionTrace is the interval of the admission trace (0: none);
	// traceOut receives it (standard error, even with --quiet).
	admissionTrace time.Duration
	traceOut       io.Writer
	shape          shapeConfig // shapes.go
	// now is the clock of the workload; nil is time.Now. Tests set a fake
	// one.
	now func() time.Time
}

// Defaults of the flags.
const (
	defaultBackend     = "sqlite"
	defaultWorkers     = 8
	defaultAccounts    = 16
	defaultDuration    = 2 * time.Second
	defaultIsolation   = "serializable"
	defaultLockOrder   = "sorted"
	defaultPolicies    = "plain,full,adaptive"
	defaultRounds      = 5
	defaultTxnTimeout  = 10 * time.Second
	defaultSQLiteBegin = "deferred"
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

// Bounds of the numeric flags: values past them would exhaust memory,
// processes or time (or overflow the balances' sum) rather than measure.
const (
	// maxWorkers bounds --workers: each worker is a goroutine and, by
	// default, a connection.
	maxWorkers = 100_000
	// maxAccounts bounds --accounts: Setup inserts one row per account.
	maxAccounts = 10_000_000
	// maxProcesses bounds --processes.
	maxProcesses = 256
	// minSlice is the shortest measured slice (--duration, or
	// --duration/--rounds with several arms).
	minSlice = 10 * time.Millisecond
	// minInterval is the shortest interval of --timeline and
	// --admission-trace: one count or one line per interval.
	minInterval = time.Millisecond
)

// maxPrefixLen keeps the longest table name, the prefix and "accounts",
// within PostgreSQL's 63-byte identifiers (MySQL allows 64).
const maxPrefixLen = 63 - len("accounts")

// validPrefix reports whether p is a plain SQL identifier (an ASCII letter
// or _, then letters, digits or _), safe to splice unquoted into SQL and
// short enough for the table names it starts.
func validPrefix(p string) bool {
	if p == "" || len(p) > maxPrefixLen {
		return false
	}
	for i, r := range p {
		letter := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '_'
		if !letter && (i == 0 || r < '0' || r > '9') {
			return false
		}
	}
	return true
}

// parseFlags parses args into a config, checking every value. Errors name
// the flag and what it expects, all mistakes at once, one per line. -h
// prints the usage to out and returns flag.ErrHelp.
func parseFlags(args []string, out io.Writer) (config, error) {
	c := config{}
	fs := flag.NewFlagSet("txnbench", flag.ContinueOnError)
	// Errors are reported by the caller, in one line; only -h prints the
	// usage.
	fs.SetOutput(io.Discard)
	var badValues []func() error
	durationVar := func(p *time.Duration, name string, def time.Duration, usage string) {
		badValues = append(badValues, typedVar(fs, p, name, def, usage, time.ParseDuration, time.Duration.String,
			"a duration with a unit, such as 2s, 500ms or 1m30s"))
	}
	intVar := func(p *int, name string, def int, usage string) {
		badValues = append(badValues, typedVar(fs, p, name, def, usage, strconv.Atoi, strconv.Itoa, "a whole number"))
	}
	var policy string
	fs.StringVar(&c.backend, "backend", defaultBackend, "database: "+strings.Join(backendNames(), ", "))
	fs.StringVar(&c.dsn, "dsn", "", "data source name (default: $TXN_PG_DSN or "+defaultPostgresDSN+" for postgres,\n$TXN_MYSQL_DSN or "+defaultMySQLDSN+" for mysql,\n$TXN_MONGODB_URI or "+defaultMongoURI+" for mongodb,\na new file in a temporary directory for sqlite)")
	intVar(&c.workers, "workers", defaultWorkers, "`N` concurrent workers, each running one transfer at a time")
	intVar(&c.conns, "conns", 0, "`N` database connections in the pool (0: one per worker)")
	intVar(&c.accounts, "accounts", defaultAccounts, "`N` accounts, 2 to 10000000; fewer accounts make hotter rows")
	durationVar(&c.duration, "duration", defaultDuration, "measured `time` of each policy (and of the serial baseline with --compare)")
	fs.StringVar(&c.isolation, "isolation", defaultIsolation, "isolation level: default (the server's own), read-committed, repeatable-read or serializable;\nSQLite is always serializable; MongoDB takes default or snapshot (read concern), and snapshot is its default")
	fs.StringVar(&c.lockOrder, "lock-order", defaultLockOrder, "order a transfer touches its two accounts: sorted (by id) or random (makes deadlocks)")
	fs.StringVar(&policy, "policy", "", "comma-separated policies to run, one after the other (interleaved in --rounds):\n"+policyHelp()+"(default "+defaultPolicies+"; with --compare, all of them)")
	fs.BoolVar(&c.compare, "compare", false, "also run a one-worker serial baseline and report each policy's goodput as a ratio to it")
	intVar(&c.rounds, "rounds", defaultRounds, "with several policies, the `N` rounds each policy's duration is split into, interleaved")
	durationVar(&c.base, "backoff-base", txn.DefaultBackoffBase, "backoff base `duration` (first retry's ceiling; the constant policy's delay)")
	durationVar(&c.cap, "backoff-cap", txn.DefaultBackoffCap, "backoff cap `duration` (largest delay)")
	intVar(&c.maxAttempts, "max-attempts", 0, "`N` attempts per transfer before giving up (0: unlimited, bounded by --txn-timeout)")
	durationVar(&c.txnTimeout, "txn-timeout", defaultTxnTimeout, "deadline (a `duration`) of one transfer, retries included")
	fs.StringVar(&c.sqliteBegin, "sqlite-begin", defaultSQLiteBegin, "SQLite transactions begin deferred (a plain BEGIN, as database/sql does: the first write\nfails with SQLITE_BUSY or SQLITE_BUSY_SNAPSHOT under contention) or immediate (take the write lock at BEGIN)")
	fs.StringVar(&c.jsonPath, "json", "", "write the results as JSON to this file (\"-\": to standard output, the table then goes to standard error)")
	fs.StringVar(&c.plotPath, "plot", defaultPlotPath(), "draw goodput and p99 latency per policy into this SVG file (\"\": no plot)")
	fs.StringVar(&c.tablePrefix, "table-prefix", defaultTablePrefix, "prefix of the two tables txnbench drops and creates (an SQL identifier)")
	badValues = append(badValues, typedVar(fs, &c.seed, "seed", 0, "`N`, the seed of the workload's random choices and of the backoff jitter (0: random)",
		func(s string) (uint64, error) { return strconv.ParseUint(s, 10, 64) },
		func(v uint64) string { return strconv.FormatUint(v, 10) }, "a whole number from 0 to 18446744073709551615"))
	fs.BoolVar(&c.quiet, "quiet", false, "no progress output")
	fs.BoolVar(&c.cold, "cold", false, "no warm-up of the measured arms: each is measured from a fresh Runner, whose adaptive limit\nstarts in slow start (what a service sees right after it starts); only the database and the pool\nare warmed first, on a Runner of their own. Without it, every arm, the serial baseline included,\nfirst runs an unmeasured warm-up slice (min(500ms, --duration/10)) on its own Runner")
	durationVar(&c.timeline, "timeline", 0, "record every commit's time and print, per arm, its commits per `interval` (such as 100ms) from the\nstart of its first measured slice, its steady goodput (over the last half of its measured time)\nand its time to steady (the end of the first window of max(500ms, 5 intervals) at >= 0.9 x steady)")
	durationVar(&c.admissionTrace, "admission-trace", 0, "print to standard error, every `interval` (such as 250ms) while an arm runs, its Runner's admission\nstate: adaptive limit, attempts admitted and queued, and the same for the retry lane; with\n--processes, every process's lines, merged in time order once the processes ended")
	badValues = append(badValues, c.shape.register(fs)...)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: txnbench [flags]\n\n"+
			"Runs a bank-transfer workload (read two balances, update both, insert a ledger row)\n"+
			"without txn and through txn's retry policies, and reports goodput, attempts per commit,\n"+
			"latency, failures and an invariant check.\n"+
			"With no flags: %d workers on %d accounts of an SQLite database in a temporary directory,\n"+
			"policies %s, %v each.\n\nFlags:\n",
			defaultWorkers, defaultAccounts, defaultPolicies, defaultDuration)
		// Every flag but the internal --child, which the parent of
		// --processes gives its children.
		shown := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
		shown.SetOutput(fs.Output())
		fs.VisitAll(func(f *flag.Flag) {
			if f.Name != "child" {
				shown.Var(f.Value, f.Name, f.Usage)
				shown.Lookup(f.Name).DefValue = f.DefValue
			}
		})
		shown.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(out)
			fs.Usage()
			return c, err
		}
		return c, flagError(err)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q (all settings are flags, such as --duration 5s; see -h)", fs.Arg(0))
	}
	set := map[string]bool{}
	// The children of --processes get the flags as set, each as one
	// --name=value argument, so that no value is ever read as a flag.
	fs.Visit(func(f *flag.Flag) {
		set[f.Name] = true
		c.shape.args = append(c.shape.args, "--"+f.Name+"="+f.Value.String())
	})

	switch {
	case set["policy"]:
		// An empty --policy is a mistake, reported by check, not the
		// default list.
		c.policies = strings.Split(policy, ",")
	case c.compare:
		c.policies = comparedPolicyNames()
	default:
		c.policies = strings.Split(defaultPolicies, ",")
	}
	var errs []error
	for _, bad := range badValues {
		if err := bad(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.check(set); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	if c.dsn == "" {
		c.dsn = defaultDSN(c.backend)
	}
	return c, nil
}

// typedVar defines a flag of type T parsed by parse. A value that does not
// parse is not an error of fs.Parse, which would stop at the first one
// with a message of its own; the returned function reports it, naming the
// flag and what it expects (want), or returns nil.
func typedVar[T any](fs *flag.FlagSet, p *T, name string, def T, usage string, parse func(string) (T, error), format func(T) string, want string) func() error {
	*p = def
	v := &typedValue[T]{p: p, parse: parse, format: format}
	fs.Var(v, name, usage)
	return func() error {
		if v.bad == nil {
			return nil
		}
		return fmt.Errorf("--%s %q: want %s", name, *v.bad, want)
	}
}

// typedValue is the flag.Value of typedVar.
type typedValue[T any] struct {
	p      *T
	parse  func(string) (T, error)
	format func(T) string
	bad    *string
}

// String implements flag.Value.
func (v *typedValue[T]) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	return v.format(*v.p)
}

// Set implements flag.Value; it records a value that does not parse.
func (v *typedValue[T]) Set(s string) error {
	x, err := v.parse(strings.TrimSpace(s))
	if err != nil {
		v.bad = &s
		return nil
	}
	*v.p, v.bad = x, nil
	return nil
}

// flagErrorPattern rewrites one of the flag package's messages.
type flagErrorPattern struct {
	re  *regexp.Regexp
	out string
}

// flagErrorPatterns return the rewrites of the flag package's messages in
// txnbench's style: the flag with two dashes, then what it expects.
func flagErrorPatterns() []flagErrorPattern {
	return []flagErrorPattern{
		{regexp.MustCompile(`^flag provided but not defined: -+(.*)$`), "--$1: no such flag"},
		{regexp.MustCompile(`^flag needs an argument: -+(.*)$`), "--$1: needs a value, as in --$1 VALUE"},
		{regexp.MustCompile(`^invalid boolean value (".*") for (?:flag )?-+([^:]*):.*$`), "--$2 $1: want true or false (or --$2 alone)"},
		{regexp.MustCompile(`^invalid value (".*") for flag -+([^:]*): (.*)$`), "--$2 $1: $3"},
	}
}

// flagError returns err, an error of flag.FlagSet.Parse, rewritten to name
// the flag with two dashes and what it expects.
func flagError(err error) error {
	msg := err.Error()
	for _, p := range flagErrorPatterns() {
		if p.re.MatchString(msg) {
			return errors.New(p.re.ReplaceAllString(msg, p.out))
		}
	}
	return err
}

// policyHelp lists the policies, one per line, for -h.
func policyHelp() string {
	var b strings.Builder
	for _, p := range policyTable() {
		fmt.Fprintf(&b, "  %-13s %s\n", p.name, p.help)
	}
	return b.String()
}

// defaultPlotPath is where the plot goes without --plot: txnbench.svg in
// the temporary directory.
func defaultPlotPath() string {
	return filepath.Join(os.TempDir(), "txnbench.svg")
}

// check validates c; set holds the flags given on the command line.
func (c *config) check(set map[string]bool) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !slices.Contains(backendNames(), c.backend) {
		bad("--backend %q: want one of %s", c.backend, strings.Join(backendNames(), ", "))
	}
	switch {
	case c.workers < 1:
		bad("--workers %d: want at least 1", c.workers)
	case c.workers > maxWorkers:
		bad("--workers %d: want at most %d", c.workers, maxWorkers)
	}
	if c.conns < 0 {
		bad("--conns %d: want 0 (one per worker) or more", c.conns)
	}
	switch {
	case c.accounts < 2:
		bad("--accounts %d: a transfer needs two accounts, want at least 2", c.accounts)
	case c.accounts > maxAccounts:
		bad("--accounts %d: want at most %d", c.accounts, maxAccounts)
	}
	switch {
	case c.duration <= 0:
		bad("--duration %v: want a positive duration such as 5s", c.duration)
	case c.duration < minSlice:
		bad("--duration %v: want at least %v", c.duration, minSlice)
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
			bad("--policy %q: empty name; want a comma-separated list of %s", strings.Join(c.policies, ","), strings.Join(policyNames(), ", "))
		case findPolicy(p) == nil:
			bad("--policy %q: want one of %s", p, strings.Join(policyNames(), ", "))
		case seen[p]:
			bad("--policy %q: listed twice", p)
		case findPolicy(p).databaseKeys && c.backend != backendPostgres && c.backend != backendMySQL:
			bad("--policy %s: holds its keys in the database, which only --backend postgres and mysql can; %s cannot", p, c.backend)
		}
		seen[p] = true
	}
	switch {
	case c.rounds < 1:
		bad("--rounds %d: want at least 1", c.rounds)
	case set["rounds"] && len(c.policies) < 2 && !c.compare:
		bad("--rounds: only meaningful with several policies or --compare")
	case (len(c.policies) > 1 || c.compare) && c.duration >= minSlice && c.duration/time.Duration(c.rounds) < minSlice:
		bad("--rounds %d: cuts --duration %v into slices of %v; want slices of at least %v, at most %d rounds",
			c.rounds, c.duration, c.duration/time.Duration(c.rounds), minSlice, int(c.duration/minSlice))
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
	switch {
	case c.timeline < 0:
		bad("--timeline %v: want a positive interval such as 100ms", c.timeline)
	case c.timeline > 0 && c.timeline < minInterval:
		bad("--timeline %v: want an interval of at least %v, such as 100ms", c.timeline, minInterval)
	case c.timeline > 0 && c.shape.processes > 1:
		bad("--timeline: not with --processes (each process has its own clock); run one process")
	}
	switch {
	case c.admissionTrace < 0:
		bad("--admission-trace %v: want a positive interval such as 250ms", c.admissionTrace)
	case c.admissionTrace > 0 && c.admissionTrace < minInterval:
		bad("--admission-trace %v: want an interval of at least %v, such as 250ms", c.admissionTrace, minInterval)
	}
	if c.sqliteBegin != "immediate" && c.sqliteBegin != "deferred" {
		bad("--sqlite-begin %q: want deferred or immediate", c.sqliteBegin)
	} else if set["sqlite-begin"] && c.backend != backendSQLite {
		bad("--sqlite-begin: only meaningful with --backend sqlite")
	}
	if !validPrefix(c.tablePrefix) {
		bad("--table-prefix %q: want an SQL identifier: a letter or _, then letters, digits or _, at most %d characters", c.tablePrefix, maxPrefixLen)
	}
	switch {
	case c.jsonPath != "" && c.jsonPath == c.plotPath:
		bad("--json and --plot name the same file %q; want two files", c.jsonPath)
	default:
		if c.jsonPath != "-" {
			if err := checkOutputPath("json", c.jsonPath); err != nil {
				errs = append(errs, err)
			}
		}
		if err := checkOutputPath("plot", c.plotPath); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// checkOutputPath checks, before the run, that the file path of flag name
// can be written: not a directory, in an existing directory where a file
// can be created. An empty path is not written and passes.
func checkOutputPath(name, path string) error {
	if path == "" {
		return nil
	}
	want := "want a file path in an existing, writable directory"
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("--%s %s: is a directory; %s", name, path, want)
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("--%s %s: directory %s does not exist; %s", name, path, dir, want)
	case err != nil:
		return fmt.Errorf("--%s %s: %w; %s", name, path, err, want)
	case !fi.IsDir():
		return fmt.Errorf("--%s %s: %s is not a directory; %s", name, path, dir, want)
	}
	// The files are written to a temporary file beside path, renamed over
	// it: try exactly that.
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".check*")
	if err != nil {
		return fmt.Errorf("--%s %s: cannot create a file in %s (%w); %s", name, path, dir, errors.Unwrap(err), want)
	}
	_ = f.Close()
	_ = os.Remove(f.Name())
	return nil
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

// workload returns the workload c describes.
func (c *config) workload() workload {
	return workload{accounts: c.accounts, sorted: c.lockOrder == "sorted", txnTimeout: c.txnTimeout,
		hotShare: c.shape.hotShare, hotWorkers: c.shape.hotWorkers, timeline: c.timeline > 0, now: c.now,
		trace: c.admissionTrace, traceOut: c.traceOut}
}

// warmupLength is the length of a warm-up slice: a tenth of --duration,
// at most maxWarmup.
func (c *config) warmupLength() time.Duration {
	return min(maxWarmup, c.duration/10)
}

// connections returns the size of the connection pool.
func (c *config) connections() int {
	if c.conns > 0 {
		return c.conns
	}
	return c.workers
}
