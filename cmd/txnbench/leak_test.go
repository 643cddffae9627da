package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

// asMainEnv makes the test binary run as txnbench itself, with its
// arguments: --processes starts copies of its own executable, which in a
// test is the test binary (TestAdmissionTraceRun sets it).
const asMainEnv = "TXNBENCH_TEST_AS_MAIN"

// dieTokenEnv names a file: the first process run as txnbench that creates
// it kills itself (SIGKILL) as it starts to write its report, after its
// transfers committed, as a child of --processes that dies at the end.
const dieTokenEnv = "TXNBENCH_TEST_DIE_TOKEN"

// startedDirEnv names a directory where each process run as txnbench
// creates a file once it runs transfers: at its first line of
// --admission-trace, written while a slice runs.
const startedDirEnv = "TXNBENCH_TEST_STARTED_DIR"

// TestMain fails the package's tests if any goroutine outlives them.
func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		ctx, _ := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		var stderr io.Writer = os.Stderr
		if dir := os.Getenv(startedDirEnv); dir != "" {
			stderr = &startedWriter{w: os.Stderr, path: filepath.Join(dir, strconv.Itoa(os.Getpid()))}
		}
		var stdout io.Writer = os.Stdout
		if path := os.Getenv(dieTokenEnv); path != "" {
			if f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600); err == nil {
				_ = f.Close()
				stdout = dieOnWrite{}
			}
		}
		os.Exit(run(ctx, os.Args[1:], stdout, stderr))
	}
	goleak.VerifyTestMain(m)
}

// dieOnWrite kills its process at the first write.
type dieOnWrite struct{}

func (dieOnWrite) Write([]byte) (int, error) {
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// startedWriter creates the file path at the first admission trace line
// written through it.
type startedWriter struct {
	w    io.Writer
	path string
	once sync.Once
}

func (s *startedWriter) Write(p []byte) (int, error) {
	if bytes.HasPrefix(p, []byte(tracePrefix)) {
		s.once.Do(func() { _ = os.WriteFile(s.path, nil, 0o600) })
	}
	return s.w.Write(p)
}
