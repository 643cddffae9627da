package txngorm_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn/internal/integrationtest"
	"gorm.io/gorm"
)

var errInner = errors.New("inner step failed")

// TestGormTransactionInsideRun calls GORM's own tx.Transaction inside fn:
// it nests through a GORM savepoint, so its failed block is undone and the
// Run commits the rest; with DisableNestedTransaction it joins the outer
// transaction and its rows stay.
func TestGormTransactionInsideRun(t *testing.T) {
	forEach(t, dialects, func(t *testing.T, d dialect) {
		for _, disable := range []bool{false, true} {
			t.Run(fmt.Sprintf("DisableNestedTransaction=%v", disable), func(t *testing.T) {
				cfg := gormConfig()
				cfg.DisableNestedTransaction = disable
				db := d.suiteDB(t, cfg)
				ctx := integrationtest.Context(t)
				tbl := integrationtest.CreateTable(t, db, prefix, "name VARCHAR(64) PRIMARY KEY")
				insert := func(tx *gorm.DB, name string) error {
					return tx.Exec("INSERT INTO "+tbl+" (name) VALUES (?)", name).Error
				}
				err := db.Runner().Run(ctx, func(ctx context.Context, tx *gorm.DB) error {
					if err := insert(tx, "outer-1"); err != nil {
						return err
					}
					err := tx.Transaction(func(tx *gorm.DB) error {
						if err := insert(tx, "inner"); err != nil {
							return err
						}
						return errInner
					})
					if !errors.Is(err, errInner) {
						return fmt.Errorf("tx.Transaction returned %v, want errInner", err)
					}
					return insert(tx, "outer-2")
				})
				require.NoError(t, err)
				want := []string{"outer-1", "outer-2"}
				if disable {
					want = []string{"inner", "outer-1", "outer-2"}
				}
				got, err := db.Strings(ctx, "SELECT name FROM "+tbl+" ORDER BY name")
				require.NoError(t, err)
				assert.Equal(t, want, got)
			})
		}
	})
}

// TestHandleCarriesContext checks that the *gorm.DB fn receives, and the
// one a nested Run receives, run their statements on the context of their
// Run: once that context is canceled, a statement on the handle fails with
// context.Canceled (the pitfall of adapters that drop the ORM's context).
func TestHandleCarriesContext(t *testing.T) {
	forEach(t, dialects, func(t *testing.T, d dialect) {
		db := d.suiteDB(t, gormConfig())
		r := db.Runner()
		t.Run("outer", func(t *testing.T) {
			ctx, cancel := context.WithCancel(integrationtest.Context(t))
			defer cancel()
			var stmtErr error
			err := r.Run(ctx, func(_ context.Context, tx *gorm.DB) error {
				cancel()
				stmtErr = tx.Exec("SELECT 1").Error
				return stmtErr
			})
			assert.ErrorIs(t, stmtErr, context.Canceled)
			assert.ErrorIs(t, err, context.Canceled)
		})
		t.Run("nested", func(t *testing.T) {
			ctx := integrationtest.Context(t)
			var stmtErr error
			err := r.Run(ctx, func(ctx context.Context, tx *gorm.DB) error {
				nctx, cancel := context.WithCancel(ctx)
				defer cancel()
				_ = r.Run(nctx, func(_ context.Context, tx *gorm.DB) error {
					cancel()
					stmtErr = tx.Exec("SELECT 1").Error
					return stmtErr
				})
				return nil
			})
			assert.ErrorIs(t, stmtErr, context.Canceled)
			assert.NoError(t, err, "the nested Run's cancellation left the outer transaction usable")
		})
	})
}
