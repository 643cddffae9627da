package txn_test

import (
	"context"
	"math"
	"math/rand/v2"

	"github.com/txnkit/txn"
)

type randT = rand.Rand

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed)) }

func posInf() float64 { return math.Inf(1) }

// intBackend is a do-nothing backend whose transactions are ints.
type intBackend struct{}

func (intBackend) Begin(context.Context, []txn.BeginOption[int]) (int, error) { return 1, nil }
func (intBackend) Commit(context.Context, int) error                          { return nil }
func (intBackend) Rollback(context.Context, int) error                        { return nil }
func (intBackend) Classify(err error) txn.Class                               { return txn.ClassPermanent }
