package sqlite_test

import (
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"

	"github.com/402claw/dispatcher/adapters/sqlite"
)

// dsnPragmas is the recommended DSN tail (see the package documentation).
const dsnPragmas = "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate"

// openDB opens a handle on the file at path with the recommended DSN, or
// with pragmas when it is not empty, and closes it when the test ends.
func openDB(t testing.TB, path string, pragmas ...string) *sql.DB {
	t.Helper()
	tail := dsnPragmas
	if len(pragmas) > 0 {
		tail = pragmas[0]
	}
	db, err := sql.Open("sqlite", "file:"+path+tail)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// newStore returns a Store on a fresh database file.
func newStore(t testing.TB) *sqlite.Store {
	t.Helper()
	s, err := sqlite.New(openDB(t, filepath.Join(t.TempDir(), "test.db")))
	require.NoError(t, err)
	return s
}
