package txnmongo_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/txnkit/txn/internal/mongotest"
)

// TestMain starts the wire-protocol test server the Example functions
// connect to through MONGODB_URI, so that their output is checked without
// a MongoDB server. The other tests start servers of their own.
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
	os.Exit(code)
}
