package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"
)

// The committer keeps statement journals in memory, and checkpoints less
// often, only while it holds a connection: the pool gets it back with its
// own temp_store and wal_autocheckpoint.
func TestCommitterRestoresConnectionSettings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "t.db")+"?_pragma=journal_mode(WAL)&_pragma=temp_store(1)&_pragma=wal_autocheckpoint(500)")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	db.SetMaxOpenConns(1) // every Conn below is the same connection

	pragma := func(q interface {
		QueryRowContext(context.Context, string, ...any) *sql.Row
	}, name string) int {
		var v int
		require.NoError(t, q.QueryRowContext(ctx, "PRAGMA "+name).Scan(&v))
		return v
	}
	require.Equal(t, 1, pragma(db, "temp_store"))
	require.Equal(t, 500, pragma(db, "wal_autocheckpoint"))
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	g := &groupTx{ctx: ctx, conn: conn}
	require.NoError(t, g.setUp())
	require.Equal(t, 2, pragma(conn, "temp_store"), "memory while the committer holds it")
	require.Equal(t, committerCheckpoint, pragma(conn, "wal_autocheckpoint"))
	g.close(false)
	require.Equal(t, 1, pragma(db, "temp_store"), "the pool's settings are back")
	require.Equal(t, 500, pragma(db, "wal_autocheckpoint"))
}
