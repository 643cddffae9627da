package main

import (
	"context"
	"errors"
)

// errMongoUnavailable is returned for --backend mongodb until the MongoDB
// backend exists.
var errMongoUnavailable = errors.New("mongodb: not yet available: txnbench gets MongoDB support with the backends/txnmongo module")

// openMongo reports that the MongoDB workload is not available yet.
func openMongo(context.Context, *config) (Store, error) {
	return nil, errMongoUnavailable
}
