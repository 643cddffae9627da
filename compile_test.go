package txn_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestOptionsCheckedByCompiler builds the small programs in
// testdata/compile: each misplaced option must be refused by the compiler
// with the message that names the option kinds, and valid.go, which puts
// the same options where they belong, must build.
func TestOptionsCheckedByCompiler(t *testing.T) {
	if testing.Short() {
		t.Skip("builds programs with the go tool")
	}
	build := func(t *testing.T, file string) (string, error) {
		t.Helper()
		cmd := exec.Command("go", "build", "-o", os.DevNull, filepath.Join("testdata", "compile", file))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	t.Run("valid", func(t *testing.T) {
		out, err := build(t, "valid.go")
		require.NoError(t, err, out)
	})
	for file, want := range map[string]string{
		"keys_on_new.go":     "txn.CallOption does not implement txn.RunnerOption (missing method applyRunner)",
		"adaptive_on_run.go": "txn.RunnerOption does not implement txn.CallOption (missing method applyCall)",
		"budget_on_run.go":   "txn.RunnerOption does not implement txn.CallOption (missing method applyCall)",
	} {
		t.Run(file, func(t *testing.T) {
			out, err := build(t, file)
			require.Error(t, err, "%s compiled", file)
			assert.Contains(t, out, want)
		})
	}
}
