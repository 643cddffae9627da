package main

import (
	"strconv"
	"time"

	"github.com/txnkit/txn"
)

// This file is the one place where txnbench builds txn options: the
// policies' Runner options, the per-call options and their types. The
// stores only pass them through (and add their backend's begin options).

// runnerOption is an option of a Runner (txn.New and the backends' New).
type runnerOption = txn.RunnerOption

// callOption is an option of one Run call.
type callOption = txn.CallOption

// policyParams are the knobs the command line gives every policy.
type policyParams struct {
	base, cap   time.Duration
	maxAttempts int
}

// plainName is the policy that runs the transfer without txn.
const plainName = "plain"

// policy is one retry strategy under test. Adding a strategy is adding one
// entry to policyTable.
type policy struct {
	name string
	// help says what the policy does, for -h, the run's legend and the
	// README.
	help string
	// plain marks the arm without the library: the store's hand-written
	// single-attempt transaction, no Runner.
	plain bool
	// runner returns the options of the Runner the policy's transfers use.
	runner func(p policyParams) []runnerOption
	// perCall, if set, returns options for one transfer, for policies that
	// depend on what the transaction touches (such as conflict keys naming
	// the two accounts).
	perCall func(t transfer) []callOption
	// optIn policies run only when --policy names them, not by default
	// with --compare.
	optIn bool
	// databaseKeys policies hold their keys in the database
	// (txn.DatabaseKeys): only the PostgreSQL and MySQL backends can.
	databaseKeys bool
}

// policyTable returns the policies in the order --compare runs them.
func policyTable() []policy {
	backoff := func(b txn.Backoff, adaptive bool) func(p policyParams) []runnerOption {
		return func(p policyParams) []runnerOption {
			opts := []runnerOption{txn.WithBackoff(b), txn.MaxAttempts(p.maxAttempts), txn.NoAdaptive()}
			if adaptive {
				opts[2] = txn.Adaptive(0)
			}
			return opts
		}
	}
	return []policy{
		{
			name:  plainName,
			help:  "without txn: the same transaction hand-written on the driver, run once, no retry (an error loses the transfer)",
			plain: true,
		},
		{
			name: "none",
			help: "txn, retry at once with no backoff (what a naive retry loop does)",
			runner: func(p policyParams) []runnerOption {
				return backoff(txn.Constant(0), false)(p)
			},
		},
		{
			name: "constant",
			help: "txn, wait --backoff-base before every retry",
			runner: func(p policyParams) []runnerOption {
				return backoff(txn.Constant(p.base), false)(p)
			},
		},
		{
			name: "full",
			help: "txn, exponential backoff with full jitter (the library's default backoff), no adaptive limit",
			runner: func(p policyParams) []runnerOption {
				return backoff(txn.FullJitter(p.base, p.cap), false)(p)
			},
		},
		{
			name: "equal",
			help: "txn, exponential backoff with equal jitter",
			runner: func(p policyParams) []runnerOption {
				return backoff(txn.EqualJitter(p.base, p.cap), false)(p)
			},
		},
		{
			name: "decorrelated",
			help: "txn, decorrelated jitter",
			runner: func(p policyParams) []runnerOption {
				return backoff(txn.DecorrelatedJitter(p.base, p.cap), false)(p)
			},
		},
		{
			name: "adaptive",
			help: "txn with its defaults: full jitter plus the adaptive concurrency limit",
			runner: func(p policyParams) []runnerOption {
				return backoff(txn.FullJitter(p.base, p.cap), true)(p)
			},
		},
		{
			name: "keyed",
			help: "txn, full jitter plus conflict keys naming the two accounts (txn.Keys), no adaptive limit",
			runner: func(p policyParams) []runnerOption {
				return backoff(txn.FullJitter(p.base, p.cap), false)(p)
			},
			perCall: accountKeys,
		},
		dbKeyedPolicy(),
	}
}

// comparedPolicyNames returns the policies --compare runs by default.
func comparedPolicyNames() []string {
	var names []string
	for _, p := range policyTable() {
		if !p.optIn {
			names = append(names, p.name)
		}
	}
	return names
}

// runnerOptions returns the options of the Runner of policy p: its own,
// the observer obs, and the seed of its jitter (none when seed is 0).
func runnerOptions(p *policy, params policyParams, obs txn.Observer, seed uint64) []runnerOption {
	opts := append(p.runner(params), txn.WithObserver(obs))
	if seed != 0 {
		opts = append(opts, txn.Seed(seed))
	}
	return opts
}

// accountKeys names the two accounts of a transfer as its conflict keys.
func accountKeys(t transfer) []callOption {
	return []callOption{txn.Keys(strconv.FormatInt(t.from, 10), strconv.FormatInt(t.to, 10))}
}

// policyNames returns the names of policyTable, in order.
func policyNames() []string {
	var names []string
	for _, p := range policyTable() {
		names = append(names, p.name)
	}
	return names
}

// findPolicy returns the policy called name, or nil.
func findPolicy(name string) *policy {
	for _, p := range policyTable() {
		if p.name == name {
			return &p
		}
	}
	return nil
}
