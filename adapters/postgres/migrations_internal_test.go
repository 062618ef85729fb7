package postgres

import (
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"
)

func TestLoadMigrations(t *testing.T) {
	t.Parallel()
	migs, err := loadMigrations(migrationFiles)
	require.NoError(t, err)
	require.NotEmpty(t, migs)
	require.Equal(t, "kv", migs[0].name)

	ok := fstest.MapFS{
		"migrations/0002_ledger.sql": {Data: []byte("SELECT 2")},
		"migrations/0001_kv.sql":     {Data: []byte("SELECT 1")},
	}
	migs, err = loadMigrations(ok)
	require.NoError(t, err)
	require.Equal(t, []int{1, 2}, []int{migs[0].version, migs[1].version})

	gap := fstest.MapFS{
		"migrations/0001_kv.sql":     {Data: []byte("SELECT 1")},
		"migrations/0003_ledger.sql": {Data: []byte("SELECT 3")},
	}
	_, err = loadMigrations(gap)
	require.ErrorContains(t, err, "without gaps")

	bad := fstest.MapFS{"migrations/kv.sql": {Data: []byte("SELECT 1")}}
	_, err = loadMigrations(bad)
	require.ErrorContains(t, err, "NNNN_name.sql")
}
