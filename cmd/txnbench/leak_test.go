package main

import (
	"context"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// asMainEnv makes the test binary run as txnbench itself, with its
// arguments: --processes starts copies of its own executable, which in a
// test is the test binary (TestAdmissionTraceRun sets it).
const asMainEnv = "TXNBENCH_TEST_AS_MAIN"

// TestMain fails the package's tests if any goroutine outlives them.
func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}
