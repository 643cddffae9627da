// Command txnbench is txn's contention workbench: it runs a bank-transfer
// workload through txn on SQLite, PostgreSQL, MySQL/MariaDB or MongoDB and reports
// goodput, attempts per commit, latency percentiles and an invariant check
// (no money created or lost, one ledger row per reported commit).
//
// Run from the repository root:
//
//	go run ./cmd/txnbench                 # SQLite in a temporary directory, about 10 s
//	go run ./cmd/txnbench --backend postgres --workers 64 --accounts 2 --compare
//	go run ./cmd/txnbench -h              # every flag
//
// It exits with status 0 when the run completed and the invariant holds, 1
// when the invariant failed or the run could not complete, and 2 for a bad
// command line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	// Signals stay caught until the process exits: an interrupt that
	// arrives once the run ended (a child of --processes that just
	// reported) must not kill it with a signal instead of its status.
	ctx, _ := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// Exit statuses.
const (
	exitOK        = 0
	exitFailed    = 1
	exitUsage     = 2
	usageHintText = "run 'txnbench -h' for the flags"
)

// run is the whole command: it parses args, runs the benchmark, prints the
// table to stdout (stderr when the JSON goes to stdout) and progress to
// stderr, writes the JSON and SVG files asked for, and returns the exit
// status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runWith(ctx, args, stdout, stderr, openStore)
}

// runWith is run with the store opened by open.
func runWith(ctx context.Context, args []string, stdout, stderr io.Writer, open storeOpener) int {
	cfg, err := parseFlags(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "txnbench: %s\n", line)
		}
		fmt.Fprintln(stderr, usageHintText)
		return exitUsage
	}
	// The progress line (redrawn on a terminal) and the admission trace
	// write from goroutines of their own: one lock orders their writes.
	terminal := isTerminal(stderr)
	stderr = &lockedWriter{w: stderr}
	cfg.traceOut = stderr
	table := stdout
	if cfg.jsonPath == "-" {
		table = stderr
	}
	var prog io.Writer = stderr
	if cfg.quiet {
		prog = io.Discard
	}
	bench := runBench
	if cfg.shape.processes > 1 {
		bench = runProcesses
	}
	rep, err := bench(ctx, &cfg, newProgress(prog, terminal), open)
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "txnbench: %s\n", line)
		}
		return exitFailed
	}
	printTable(table, rep)
	printShapes(table, rep)
	printTimelines(table, rep)
	status := exitOK
	if cfg.jsonPath != "" {
		if err := writeJSON(cfg.jsonPath, stdout, rep); err != nil {
			fmt.Fprintf(stderr, "txnbench: --json: %v\n", err)
			status = exitFailed
		}
	}
	if cfg.plotPath != "" {
		if err := writeFileAtomic(cfg.plotPath, plotSVG(rep)); err != nil {
			fmt.Fprintf(stderr, "txnbench: --plot: %v\n", err)
			status = exitFailed
		} else {
			fmt.Fprintf(table, "plot: %s\n", cfg.plotPath)
		}
	}
	if !rep.Invariant.OK {
		fmt.Fprintf(stderr, "txnbench: invariant FAILED: %v\n", rep.Invariant.Problems)
		status = exitFailed
	}
	if rep.Interrupted {
		status = exitFailed
	}
	return status
}

// isTerminal reports whether w is a character device (a terminal), so
// that progress can be redrawn in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
