package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/postgres"
)

// databaseURL returns TEST_DATABASE_URL. Unset, the test is skipped, except
// under CI=true where a missing service must fail the run rather than hide.
func databaseURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("TEST_DATABASE_URL")
	if u == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("TEST_DATABASE_URL is not set; it is required when CI=true")
		}
		t.Skip("TEST_DATABASE_URL is not set; skipping PostgreSQL tests")
	}
	return u
}

// newPool returns a pool of at most maxConns connections, closed on cleanup.
// Each pool stands in for one gateway replica.
func newPool(t testing.TB, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(databaseURL(t))
	require.NoError(t, err)
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.NoError(t, pool.Ping(context.Background()), "PostgreSQL at TEST_DATABASE_URL does not answer")
	return pool
}

// freshSchema returns the name of a schema unique to this test, dropped on
// cleanup, so parallel and repeated runs never see each other's rows.
func freshSchema(t testing.TB, pool *pgxpool.Pool) string {
	t.Helper()
	var b [8]byte
	_, _ = rand.Read(b[:])
	schema := "kvtest_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		_, err := pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// newStore returns a migrated Store on a fresh pool and schema.
func newStore(t testing.TB) (*postgres.Store, *pgxpool.Pool, string) {
	t.Helper()
	pool := newPool(t, 4)
	schema := freshSchema(t, pool)
	s, err := postgres.New(context.Background(), pool, postgres.Config{Schema: schema})
	require.NoError(t, err)
	return s, pool, schema
}

// newFastStore is newStore on a pool of 16 connections with
// synchronous_commit off: commits do not wait for the WAL flush. Admission
// and atomicity are the same (the adapter documents the setting as an
// option); only durability through a server crash differs, which these
// tests do not exercise. It keeps the heavily concurrent conformance suites
// quick.
func newFastStore(t testing.TB) *postgres.Store {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(databaseURL(t))
	require.NoError(t, err)
	cfg.MaxConns = 16
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	s, err := postgres.New(context.Background(), pool, postgres.Config{Schema: freshSchema(t, pool)})
	require.NoError(t, err)
	return s
}

// replicas returns n stores over n pools sharing one schema.
func replicas(t *testing.T, n int) []*postgres.Store {
	t.Helper()
	var stores []*postgres.Store
	first, _, schema := newStore(t)
	stores = append(stores, first)
	for len(stores) < n {
		s, err := postgres.New(context.Background(), newPool(t, 4), postgres.Config{Schema: schema})
		require.NoError(t, err)
		stores = append(stores, s)
	}
	return stores
}
