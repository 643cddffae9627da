// Package fakedb is a scripted txn.Backend for the core's tests: each Begin
// and Commit takes its outcome from a script, every call is logged in order,
// and committed writes land in a map, so tests can assert exactly what the
// Runner did to the database.
package fakedb

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/txnkit/txn"
)

// Error is an error with a fixed class, standing in for a driver error.
type Error struct {
	Class txn.Class
	Msg   string
}

// Error returns the message.
func (e *Error) Error() string { return e.Msg }

// Err returns a new *Error of class c.
func Err(c txn.Class, msg string) *Error { return &Error{Class: c, Msg: msg} }

// Tx is one fake transaction.
type Tx struct {
	ID     int
	db     *DB
	writes []string
	marks  []int
	done   bool
}

// Write records key as written by the transaction.
func (t *Tx) Write(key string) {
	t.db.mu.Lock()
	defer t.db.mu.Unlock()
	t.writes = append(t.writes, key)
}

// Put records key as written, like Write, unless the transaction has
// ended: then it writes nothing and returns an error wrapping
// txn.ErrTxDone, as database/sql and pgx refuse statements on a finished
// transaction.
func (t *Tx) Put(key string) error {
	t.db.mu.Lock()
	defer t.db.mu.Unlock()
	if t.done {
		t.db.log = append(t.db.log, fmt.Sprintf("put %d %s on finished tx", t.ID, key))
		return fmt.Errorf("fakedb: put %s: %w", key, txn.ErrTxDone)
	}
	t.writes = append(t.writes, key)
	return nil
}

// Finish ends the transaction behind the Runner's back, as a fn that calls
// Commit or Rollback itself would.
func (t *Tx) Finish() {
	t.db.mu.Lock()
	defer t.db.mu.Unlock()
	t.done = true
}

// DB is the fake database and backend. The zero value is not usable; call New.
type DB struct {
	mu        sync.Mutex
	beginErrs []error
	commitErr []error
	spErrs    []error
	nextID    int
	log       []string
	committed map[string]int
	rollbacks []RollbackCall
}

// New returns an empty fake database.
func New() *DB {
	return &DB{committed: map[string]int{}}
}

// FailBegin scripts the next Begin calls to return errs, in order (nil for success).
func (d *DB) FailBegin(errs ...error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.beginErrs = append(d.beginErrs, errs...)
}

// ClearBegin drops the Begin failures still scripted and returns how many
// there were.
func (d *DB) ClearBegin() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := len(d.beginErrs)
	d.beginErrs = nil
	return n
}

// FailCommit scripts the next Commit calls to return errs, in order (nil for success).
func (d *DB) FailCommit(errs ...error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.commitErr = append(d.commitErr, errs...)
}

// FailSavepoint scripts the next BeginSavepoint calls.
func (d *DB) FailSavepoint(errs ...error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.spErrs = append(d.spErrs, errs...)
}

// Log returns the calls made so far, such as "begin 1", "commit 1",
// "rollback 2", "savepoint 1 txn_sp_1".
func (d *DB) Log() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.log...)
}

// Record appends an entry to the log, so tests can interleave their own
// events (a sleep, a callback) with the backend's.
func (d *DB) Record(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.log = append(d.log, fmt.Sprintf(format, args...))
}

// Committed returns how many committed transactions wrote key.
func (d *DB) Committed(key string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.committed[key]
}

// RollbackCall is what a Rollback call's context looked like when it was made.
type RollbackCall struct {
	Err         error
	Deadline    time.Time
	HasDeadline bool
}

// RollbackCalls returns the state of the contexts Rollback was called with.
func (d *DB) RollbackCalls() []RollbackCall {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]RollbackCall(nil), d.rollbacks...)
}

func pop(list *[]error) error {
	if len(*list) == 0 {
		return nil
	}
	err := (*list)[0]
	*list = (*list)[1:]
	return err
}

// Begin implements txn.Backend.
func (d *DB) Begin(ctx context.Context, opts []txn.BeginOption[*Tx]) (*Tx, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := pop(&d.beginErrs); err != nil {
		d.log = append(d.log, "begin failed")
		return nil, err
	}
	d.nextID++
	d.log = append(d.log, fmt.Sprintf("begin %d", d.nextID))
	return &Tx{ID: d.nextID, db: d}, nil
}

// Commit implements txn.Backend. A scripted error of class ClassConnLost or
// ClassAmbiguous is returned after the writes were applied (the commit
// happened, the reply was lost); any other scripted error leaves nothing.
func (d *DB) Commit(ctx context.Context, tx *Tx) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if tx.done {
		d.log = append(d.log, fmt.Sprintf("commit %d on finished tx", tx.ID))
		return fmt.Errorf("fakedb: %w", txn.ErrTxDone)
	}
	err := pop(&d.commitErr)
	var fe *Error
	lostReply := err != nil && asError(err, &fe) && (fe.Class == txn.ClassConnLost || fe.Class == txn.ClassAmbiguous)
	if err != nil && !lostReply {
		d.log = append(d.log, fmt.Sprintf("commit %d failed", tx.ID))
		if fe == nil || fe.Class != txn.ClassCommitRetryable {
			tx.done = true
		}
		return err
	}
	tx.done = true
	for _, k := range tx.writes {
		d.committed[k]++
	}
	if lostReply {
		d.log = append(d.log, fmt.Sprintf("commit %d reply lost", tx.ID))
		return err
	}
	d.log = append(d.log, fmt.Sprintf("commit %d", tx.ID))
	return nil
}

func asError(err error, target **Error) bool {
	e, ok := err.(*Error)
	if ok {
		*target = e
	}
	return ok
}

// Rollback implements txn.Backend.
func (d *DB) Rollback(ctx context.Context, tx *Tx) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	dl, ok := ctx.Deadline()
	d.rollbacks = append(d.rollbacks, RollbackCall{Err: ctx.Err(), Deadline: dl, HasDeadline: ok})
	if tx.done {
		d.log = append(d.log, fmt.Sprintf("rollback %d on finished tx", tx.ID))
		return fmt.Errorf("fakedb: %w", txn.ErrTxDone)
	}
	tx.done = true
	tx.writes = nil
	d.log = append(d.log, fmt.Sprintf("rollback %d", tx.ID))
	return nil
}

// Classify returns the class of an *Error on err's chain, else ClassPermanent.
func (d *DB) Classify(err error) txn.Class {
	for err != nil {
		if fe, ok := err.(*Error); ok {
			return fe.Class
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return txn.ClassPermanent
		}
		err = u.Unwrap()
	}
	return txn.ClassPermanent
}

// SavepointDB is a DB that also implements txn.Savepointer.
type SavepointDB struct{ *DB }

// WithSavepoints returns d with savepoint support.
func (d *DB) WithSavepoints() SavepointDB { return SavepointDB{d} }

// BeginSavepoint implements txn.Savepointer. The savepoint statements
// refuse a finished transaction with an error wrapping txn.ErrTxDone, as
// database/sql and pgx do.
func (s SavepointDB) BeginSavepoint(ctx context.Context, tx *Tx, name string) (*Tx, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tx.done {
		s.log = append(s.log, fmt.Sprintf("savepoint %d %s on finished tx", tx.ID, name))
		return nil, fmt.Errorf("fakedb: savepoint %s: %w", name, txn.ErrTxDone)
	}
	if err := pop(&s.spErrs); err != nil {
		s.log = append(s.log, fmt.Sprintf("savepoint %d %s failed", tx.ID, name))
		return nil, err
	}
	tx.marks = append(tx.marks, len(tx.writes))
	s.log = append(s.log, fmt.Sprintf("savepoint %d %s", tx.ID, name))
	return tx, nil
}

// ReleaseSavepoint implements txn.Savepointer.
func (s SavepointDB) ReleaseSavepoint(ctx context.Context, tx *Tx, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tx.done {
		s.log = append(s.log, fmt.Sprintf("release %d %s on finished tx", tx.ID, name))
		return fmt.Errorf("fakedb: release %s: %w", name, txn.ErrTxDone)
	}
	tx.marks = tx.marks[:len(tx.marks)-1]
	s.log = append(s.log, fmt.Sprintf("release %d %s", tx.ID, name))
	return nil
}

// RollbackToSavepoint implements txn.Savepointer.
func (s SavepointDB) RollbackToSavepoint(ctx context.Context, tx *Tx, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tx.done {
		s.log = append(s.log, fmt.Sprintf("rollback to %d %s on finished tx", tx.ID, name))
		return fmt.Errorf("fakedb: rollback to %s: %w", name, txn.ErrTxDone)
	}
	m := tx.marks[len(tx.marks)-1]
	tx.marks = tx.marks[:len(tx.marks)-1]
	tx.writes = tx.writes[:m]
	s.log = append(s.log, fmt.Sprintf("rollback to %d %s", tx.ID, name))
	return nil
}
