package main

import (
	"strconv"
	"time"

	"github.com/txnkit/txn"
)

// policyParams are the knobs the command line gives every policy.
type policyParams struct {
	base, cap   time.Duration
	maxAttempts int
}

// policy is one retry strategy under test. Adding a strategy is adding one
// entry to policyTable.
type policy struct {
	name string
	// help says what the policy does, for -h and the README.
	help string
	// runner returns the options of the Runner the policy's transfers use.
	runner func(p policyParams) []txn.RunnerOption
	// perCall, if set, returns options for one transfer, for policies that
	// depend on what the transaction touches (such as conflict keys naming
	// the two accounts).
	perCall func(t transfer) []txn.CallOption
}

// policyTable returns the policies in the order --compare runs them.
func policyTable() []policy {
	return []policy{
		{
			name: "none",
			help: "retry at once, no backoff",
			runner: func(p policyParams) []txn.RunnerOption {
				return []txn.RunnerOption{txn.WithBackoff(txn.Constant(0)), txn.MaxAttempts(p.maxAttempts), txn.NoAdaptive()}
			},
		},
		{
			name: "constant",
			help: "wait --backoff-base before every retry",
			runner: func(p policyParams) []txn.RunnerOption {
				return []txn.RunnerOption{txn.WithBackoff(txn.Constant(p.base)), txn.MaxAttempts(p.maxAttempts), txn.NoAdaptive()}
			},
		},
		{
			name: "full",
			help: "exponential backoff with full jitter (the library's default backoff), no adaptive limit",
			runner: func(p policyParams) []txn.RunnerOption {
				return []txn.RunnerOption{txn.WithBackoff(txn.FullJitter(p.base, p.cap)), txn.MaxAttempts(p.maxAttempts), txn.NoAdaptive()}
			},
		},
		{
			name: "equal",
			help: "exponential backoff with equal jitter",
			runner: func(p policyParams) []txn.RunnerOption {
				return []txn.RunnerOption{txn.WithBackoff(txn.EqualJitter(p.base, p.cap)), txn.MaxAttempts(p.maxAttempts), txn.NoAdaptive()}
			},
		},
		{
			name: "decorrelated",
			help: "decorrelated jitter",
			runner: func(p policyParams) []txn.RunnerOption {
				return []txn.RunnerOption{txn.WithBackoff(txn.DecorrelatedJitter(p.base, p.cap)), txn.MaxAttempts(p.maxAttempts), txn.NoAdaptive()}
			},
		},
		{
			name: "adaptive",
			help: "full jitter plus the adaptive concurrency limit: the library's defaults",
			runner: func(p policyParams) []txn.RunnerOption {
				return []txn.RunnerOption{txn.WithBackoff(txn.FullJitter(p.base, p.cap)), txn.MaxAttempts(p.maxAttempts), txn.Adaptive(0)}
			},
		},
		{
			name: "keyed",
			help: "full jitter plus conflict keys naming the two accounts (txn.Keys), no adaptive limit",
			runner: func(p policyParams) []txn.RunnerOption {
				return []txn.RunnerOption{txn.WithBackoff(txn.FullJitter(p.base, p.cap)), txn.MaxAttempts(p.maxAttempts), txn.NoAdaptive()}
			},
			perCall: accountKeys,
		},
	}
}

// accountKeys names the two accounts of a transfer as its conflict keys.
func accountKeys(t transfer) []txn.CallOption {
	return []txn.CallOption{txn.Keys(strconv.FormatInt(t.from, 10), strconv.FormatInt(t.to, 10))}
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
