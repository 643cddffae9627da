package txnmongo_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/txnkit/txn/internal/mongotest"
)

// TestMain starts the wire-protocol test server the Example functions
// connect to through MONGODB_URI, so that their output is checked without
// a MongoDB server. The other tests start servers of their own. Once the
// server is closed, it fails the package's tests if any goroutine outlives
// them.
func TestMain(m *testing.M) {
	srv, err := mongotest.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := os.Setenv("MONGODB_URI", srv.URI()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	srv.Close()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak: goroutines outlived the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}
