package txn_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/fakedb"
)

var errInjected = errors.New("injected fault")

// scripted is an Interceptor that fails the listed (point, attempt) pairs
// with the error made by mk and logs every consultation.
type scripted struct {
	mu    sync.Mutex
	fail  map[string]bool
	mk    func(error) error
	calls []string
}

func newScripted(mk func(error) error, at ...string) *scripted {
	s := &scripted{fail: map[string]bool{}, mk: mk}
	for _, a := range at {
		s.fail[a] = true
	}
	return s
}

func (s *scripted) Intercept(_ context.Context, p txn.InterceptPoint, attempt int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := fmt.Sprintf("%v %d", p, attempt)
	s.calls = append(s.calls, k)
	if s.fail[k] {
		return s.mk(errInjected)
	}
	return nil
}

func (s *scripted) log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

func TestInterceptRetryableFaultAtEachPoint(t *testing.T) {
	for _, tc := range []struct {
		point string
		log   []string
	}{
		{"BEGIN 1", []string{"begin 1", "commit 1"}},
		{"before COMMIT 1", []string{"begin 1", "rollback 1", "begin 2", "commit 2"}},
		{"COMMIT 1", []string{"begin 1", "rollback 1", "begin 2", "commit 2"}},
	} {
		t.Run(tc.point, func(t *testing.T) {
			rec := &recorder{}
			db, _, r := setup(t, false, txn.WithObserver(rec))
			in := newScripted(txn.Retry, tc.point)
			calls := 0
			err := r.WithInterceptor(in).Run(context.Background(), failing(&calls, "k"))
			require.NoError(t, err)
			assert.Equal(t, 1, db.Committed("k"), "the failed attempt's write was rolled back, the retry's committed")
			assert.Equal(t, tc.log, filterSleeps(db.Log()))
			assert.Contains(t, rec.events, "retry 1 retryable injected fault")
			assert.Equal(t, "committed 2", rec.events[len(rec.events)-1])
		})
	}
}

func filterSleeps(log []string) []string {
	var out []string
	for _, l := range log {
		if len(l) < 5 || l[:5] != "sleep" {
			out = append(out, l)
		}
	}
	return out
}

func TestInterceptConsultedInOrderOnlyByOutermostRun(t *testing.T) {
	db, _, r := setup(t, true)
	in := newScripted(txn.Retry, "before COMMIT 1")
	faulty := r.WithInterceptor(in)
	outer := 0
	var commits []int
	err := faulty.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
		outer++
		n := outer
		tx.Write("outer")
		// The application's own Runner, nested: it joins the faulty
		// transaction through a savepoint, and its work is undone with it.
		if err := r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
			tx.Write("nested")
			return txn.OnCommit(ctx, func() { commits = append(commits, n) })
		}); err != nil {
			return err
		}
		return txn.Savepoint(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
			tx.Write("savepoint")
			return nil
		})
	})
	require.NoError(t, err)
	assert.Equal(t, 2, outer)
	assert.Equal(t, []int{2}, commits, "OnCommit of the rolled-back attempt never ran")
	for _, k := range []string{"outer", "nested", "savepoint"} {
		assert.Equal(t, 1, db.Committed(k), k)
	}
	assert.Equal(t, []string{
		"BEGIN 1", "before COMMIT 1",
		"BEGIN 2", "before COMMIT 2", "COMMIT 2", "after COMMIT 2",
	}, in.log())
}

func TestInterceptUnknownOutcomeAfterRealCommit(t *testing.T) {
	t.Run("not idempotent", func(t *testing.T) {
		db, _, r := setup(t, false)
		in := newScripted(func(err error) error { return err }, "after COMMIT 1")
		calls, callbacks := 0, 0
		err := r.WithInterceptor(in).Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
			calls++
			tx.Write("k")
			return txn.OnCommit(ctx, func() { callbacks++ })
		})
		require.ErrorIs(t, err, txn.ErrCommitUnknown)
		require.ErrorIs(t, err, errInjected)
		assert.Equal(t, 1, calls, "fn is not run again after an unknown outcome")
		assert.Equal(t, 1, db.Committed("k"), "the commit really happened")
		assert.Zero(t, callbacks, "Run cannot know the commit happened")
	})
	t.Run("idempotent", func(t *testing.T) {
		db, _, r := setup(t, false)
		in := newScripted(txn.Permanent, "after COMMIT 1")
		calls, callbacks := 0, 0
		err := r.WithInterceptor(in).Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
			calls++
			tx.Write("k")
			return txn.OnCommit(ctx, func() { callbacks++ })
		}, txn.Idempotent())
		require.NoError(t, err)
		assert.Equal(t, 2, calls, "an Idempotent call runs fn again, whatever mark the error carries")
		assert.Equal(t, 2, db.Committed("k"))
		assert.Equal(t, 1, callbacks)
	})
}

func TestInterceptUnmarkedFaultIsClassifiedLikeADatabaseError(t *testing.T) {
	db, _, r := setup(t, false)
	calls := 0
	in := newScripted(func(err error) error { return err }, "before COMMIT 1")
	err := r.WithInterceptor(in).Run(context.Background(), failing(&calls, "k"))
	assert.Same(t, errInjected, err, "an error the classifier does not know is permanent")
	assert.Equal(t, 1, calls)
	assert.Zero(t, db.Committed("k"))

	// A fault at BEGIN that the backend calls ambiguous is retried: nothing
	// was sent.
	calls = 0
	in = newScripted(func(error) error { return errAmbig }, "BEGIN 1")
	require.NoError(t, r.WithInterceptor(in).Run(context.Background(), failing(&calls, "k")))
	assert.Equal(t, 1, calls)
}

func TestInterceptViews(t *testing.T) {
	db, _, r := setup(t, false)
	in := newScripted(txn.Retry, "BEGIN 1")
	faulty := r.WithInterceptor(in)
	require.NoError(t, faulty.WithBegin().Run(context.Background(), func(context.Context, *fakedb.Tx) error { return nil }))
	assert.NotEmpty(t, in.log(), "a WithBegin view of a faulty view keeps its interceptor")

	in2 := newScripted(txn.Retry)
	require.NoError(t, faulty.WithInterceptor(nil).Run(context.Background(), func(context.Context, *fakedb.Tx) error { return nil }))
	require.NoError(t, r.Run(context.Background(), func(context.Context, *fakedb.Tx) error { return nil }))
	assert.Empty(t, in2.log())
	assert.Len(t, in.log(), 5, "the other views never consulted it")
	_ = db

	var nilRunner *txn.Runner[*fakedb.Tx]
	assert.Nil(t, nilRunner.WithInterceptor(in))
	assert.Equal(t, "before COMMIT", txn.InterceptBeforeCommit.String())
	assert.Equal(t, "InterceptPoint(9)", txn.InterceptPoint(9).String())
}
