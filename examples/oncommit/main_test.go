package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRun(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), &out))
	want := `order: alice wants 3 widgets
  alice: attempt 1 failed (payment service timed out); rolled back, its event dropped
  alice: committed as order 1
order: bob wants 4 widgets
  bob: rejected: out of stock (rolled back, no event)
order: carol wants 2 widgets
  carol: committed as order 2
events published:
  order 1 placed: alice, 3 widgets
  order 2 placed: carol, 2 widgets
`
	assert.Equal(t, want, out.String())
}
