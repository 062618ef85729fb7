package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"
)

// The committer keeps statement journals in memory only while it holds a
// connection: the pool gets it back with its own temp_store.
func TestCommitterRestoresTempStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "t.db")+"?_pragma=journal_mode(WAL)&_pragma=temp_store(1)")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	db.SetMaxOpenConns(1) // every Conn below is the same connection

	tempStore := func() int {
		var v int
		require.NoError(t, db.QueryRowContext(ctx, "PRAGMA temp_store").Scan(&v))
		return v
	}
	require.Equal(t, 1, tempStore())
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	g := &groupTx{ctx: ctx, conn: conn}
	require.NoError(t, g.memoryTemp())
	var v int
	require.NoError(t, conn.QueryRowContext(ctx, "PRAGMA temp_store").Scan(&v))
	require.Equal(t, 2, v, "memory while the committer holds it")
	g.close(false)
	require.Equal(t, 1, tempStore(), "the pool's setting is back")
}
