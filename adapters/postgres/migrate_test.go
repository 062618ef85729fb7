package postgres_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/postgres"
)

func TestMigrationsIdempotent(t *testing.T) {
	t.Parallel()
	_, pool, schema := newStore(t)
	ctx := context.Background()
	_, err := postgres.New(ctx, pool, postgres.Config{Schema: schema})
	require.NoError(t, err, "a second New is a no-op")
	var versions []int
	rows, err := pool.Query(ctx, "SELECT version FROM "+pgx.Identifier{schema, "schema_migrations"}.Sanitize()+" ORDER BY version")
	require.NoError(t, err)
	versions, err = pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(t, err)
	want := make([]int, postgres.SchemaVersion())
	for i := range want {
		want[i] = i + 1
	}
	require.Equal(t, want, versions)
	require.GreaterOrEqual(t, postgres.SchemaVersion(), 1)
}

// Replicas starting together on an empty schema: every New succeeds and
// the migrations are applied once.
func TestMigrationsConcurrentStart(t *testing.T) {
	t.Parallel()
	pool := newPool(t, 8)
	schema := freshSchema(t, pool)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = postgres.New(ctx, pool, postgres.Config{Schema: schema})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	var n int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, "schema_migrations"}.Sanitize()).Scan(&n))
	require.Equal(t, postgres.SchemaVersion(), n)
}

func TestMigrationsRefuseNewerSchema(t *testing.T) {
	t.Parallel()
	_, pool, schema := newStore(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, "INSERT INTO "+pgx.Identifier{schema, "schema_migrations"}.Sanitize()+
		" (version, name) VALUES ($1, 'from_the_future')", postgres.SchemaVersion()+1)
	require.NoError(t, err)
	_, err = postgres.New(ctx, pool, postgres.Config{Schema: schema})
	require.ErrorIs(t, err, postgres.ErrSchemaTooNew)
	require.ErrorContains(t, err, schema)
}

func TestSchemaNameIsQuoted(t *testing.T) {
	t.Parallel()
	pool := newPool(t, 2)
	schema := freshSchema(t, pool) + `-Odd "name"`
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	})
	s, err := postgres.New(context.Background(), pool, postgres.Config{Schema: schema})
	require.NoError(t, err)
	require.NoError(t, s.Set(context.Background(), "k", []byte("v"), 0))
	v, err := s.Get(context.Background(), "k")
	require.NoError(t, err)
	require.Equal(t, "v", string(v))
}
