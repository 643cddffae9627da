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
	s := out.String()
	assert.Contains(t, s, "imported 3 of 6 rows in one transaction")
	assert.Contains(t, s, `skipped A-100 "Teapot (again)": constraint failed: UNIQUE`)
	assert.Contains(t, s, `skipped A-102 "Saucer": constraint failed: CHECK`)
	assert.Contains(t, s, `skipped A-103 "": constraint failed: CHECK`)
	assert.Contains(t, s, "products table: 3 rows")
}
