package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"
)

// Append's connection keeps statement journals in memory, and checkpoints
// as seldom as the committer's, only while the appender holds it: the pool
// gets it back with its own temp_store and wal_autocheckpoint.
func TestAppenderRestoresConnectionSettings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "t.db")+"?_pragma=journal_mode(WAL)&_pragma=temp_store(1)&_pragma=wal_autocheckpoint(500)")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	db.SetMaxOpenConns(1) // the appender's connection is the pool's only one

	pragma := func(q interface {
		QueryRowContext(context.Context, string, ...any) *sql.Row
	}, name string) int {
		var v int
		require.NoError(t, q.QueryRowContext(ctx, "PRAGMA "+name).Scan(&v))
		return v
	}
	require.Equal(t, 1, pragma(db, "temp_store"))
	require.Equal(t, 500, pragma(db, "wal_autocheckpoint"))
	var a appender
	conn, err := a.acquire(ctx, db)
	require.NoError(t, err)
	require.Equal(t, 2, pragma(conn, "temp_store"), "memory while the appender holds it")
	require.Equal(t, committerCheckpoint, pragma(conn, "wal_autocheckpoint"))
	a.release(false)

	a.mu.Lock()
	a.closeLocked(false) // what idle does a second after the last batch
	a.mu.Unlock()
	require.Equal(t, 1, pragma(db, "temp_store"), "the pool's settings are back")
	require.Equal(t, 500, pragma(db, "wal_autocheckpoint"))
}
