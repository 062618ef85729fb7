// Package opstest is the conformance suite of the ops ports (ops.Users,
// ops.Datasets) and of the ledger's optional ledger.KeyLookup ability.
// Every adapter runs it against a fresh, empty store per subtest:
//
//	func TestOpsConformance(t *testing.T) {
//		opstest.RunUsers(t, func(t *testing.T) ops.Users { return memory.NewUsers() })
//		opstest.RunDatasets(t, func(t *testing.T) ops.Datasets { return memory.NewDatasets() })
//		opstest.RunKeyLookup(t, func(t *testing.T) ledger.Store { return memory.NewLedger() })
//	}
//
// It checks sentinel errors, byte-exact round trips and, with many
// goroutines and exact counts, that concurrent creation never admits a
// duplicate. Run it under -race.
package opstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/ledger/ledgertest"
	"github.com/402claw/dispatcher/ops"
)

// base is the suite's reference time, UTC with microsecond precision.
var base = time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)

// RunUsers runs the ops.Users suite.
func RunUsers(t *testing.T, newStore func(t *testing.T) ops.Users) {
	t.Helper()
	ctx := context.Background()
	t.Run("CreateAndGetUser", func(t *testing.T) {
		s := newStore(t)
		require.NoError(t, s.CreateUser(ctx, ops.User{ID: "u-1", Name: "Ada Lovelace ✓", CreatedAt: base}))
		u, err := s.GetUser(ctx, "u-1")
		require.NoError(t, err)
		require.Equal(t, "u-1", u.ID)
		require.Equal(t, "Ada Lovelace ✓", u.Name)
		require.True(t, base.Equal(u.CreatedAt), "created at %v, want %v", u.CreatedAt, base)
		err = s.CreateUser(ctx, ops.User{ID: "u-1", Name: "again", CreatedAt: base})
		require.ErrorIs(t, err, ops.ErrDuplicate)
		u, err = s.GetUser(ctx, "u-1")
		require.NoError(t, err)
		require.Equal(t, "Ada Lovelace ✓", u.Name, "a duplicate create changed the user")
		_, err = s.GetUser(ctx, "nobody")
		require.ErrorIs(t, err, ops.ErrNotFound)
	})
	t.Run("KeysByHash", func(t *testing.T) {
		s := newStore(t)
		require.NoError(t, s.CreateUser(ctx, ops.User{ID: "u-1", CreatedAt: base}))
		k := ops.APIKey{ID: "key_1", UserID: "u-1", Hash: ops.HashKey("claw_secret-1"), Label: "laptop", CreatedAt: base}
		require.NoError(t, s.CreateKey(ctx, k))
		got, err := s.KeyByHash(ctx, ops.HashKey("claw_secret-1"))
		require.NoError(t, err)
		require.Equal(t, k.ID, got.ID)
		require.Equal(t, k.UserID, got.UserID)
		require.Equal(t, k.Hash, got.Hash)
		require.Equal(t, "laptop", got.Label)
		require.True(t, base.Equal(got.CreatedAt))
		require.True(t, got.Active())
		_, err = s.KeyByHash(ctx, ops.HashKey("claw_other"))
		require.ErrorIs(t, err, ops.ErrNotFound)

		require.ErrorIs(t, s.CreateKey(ctx, ops.APIKey{ID: "key_1", UserID: "u-1", Hash: ops.HashKey("x"), CreatedAt: base}), ops.ErrDuplicate, "same id")
		require.ErrorIs(t, s.CreateKey(ctx, ops.APIKey{ID: "key_2", UserID: "u-1", Hash: k.Hash, CreatedAt: base}), ops.ErrDuplicate, "same hash")
		require.ErrorIs(t, s.CreateKey(ctx, ops.APIKey{ID: "key_3", UserID: "ghost", Hash: ops.HashKey("y"), CreatedAt: base}), ops.ErrNotFound, "unknown user")
		_, err = s.KeyByHash(ctx, ops.HashKey("y"))
		require.ErrorIs(t, err, ops.ErrNotFound, "a refused key was stored")
	})
	t.Run("Revoke", func(t *testing.T) {
		s := newStore(t)
		require.NoError(t, s.CreateUser(ctx, ops.User{ID: "u-1", CreatedAt: base}))
		require.NoError(t, s.CreateKey(ctx, ops.APIKey{ID: "key_1", UserID: "u-1", Hash: ops.HashKey("s1"), CreatedAt: base}))
		require.NoError(t, s.CreateKey(ctx, ops.APIKey{ID: "key_2", UserID: "u-1", Hash: ops.HashKey("s2"), CreatedAt: base}))
		at := base.Add(time.Hour)
		require.NoError(t, s.RevokeKey(ctx, "key_1", at))
		got, err := s.KeyByHash(ctx, ops.HashKey("s1"))
		require.NoError(t, err)
		require.False(t, got.Active())
		require.True(t, at.Equal(got.RevokedAt), "revoked at %v, want %v", got.RevokedAt, at)
		require.NoError(t, s.RevokeKey(ctx, "key_1", at.Add(time.Hour)), "revoking twice")
		got, err = s.KeyByHash(ctx, ops.HashKey("s1"))
		require.NoError(t, err)
		require.True(t, at.Equal(got.RevokedAt), "a second revocation moved the time")
		other, err := s.KeyByHash(ctx, ops.HashKey("s2"))
		require.NoError(t, err)
		require.True(t, other.Active(), "revoking one key revoked another")
		require.ErrorIs(t, s.RevokeKey(ctx, "key_404", at), ops.ErrNotFound)
	})
	t.Run("ConcurrentCreate", func(t *testing.T) {
		s := newStore(t)
		const n = 32
		var ok, dup atomic.Int64
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				err := s.CreateUser(ctx, ops.User{ID: "same", Name: fmt.Sprint(i), CreatedAt: base})
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, ops.ErrDuplicate):
					dup.Add(1)
				default:
					t.Errorf("create user: %v", err)
				}
			}(i)
		}
		wg.Wait()
		require.Equal(t, int64(1), ok.Load())
		require.Equal(t, int64(n-1), dup.Load())
		// Many keys at once, each found by its own hash.
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				k := ops.APIKey{ID: fmt.Sprintf("key_%d", i), UserID: "same", Hash: ops.HashKey(fmt.Sprint("s", i)), CreatedAt: base}
				if err := s.CreateKey(ctx, k); err != nil {
					t.Errorf("create key %d: %v", i, err)
				}
			}(i)
		}
		wg.Wait()
		for i := 0; i < n; i++ {
			k, err := s.KeyByHash(ctx, ops.HashKey(fmt.Sprint("s", i)))
			require.NoError(t, err)
			require.Equal(t, fmt.Sprintf("key_%d", i), k.ID)
		}
	})
}

// RunDatasets runs the ops.Datasets suite.
func RunDatasets(t *testing.T, newStore func(t *testing.T) ops.Datasets) {
	t.Helper()
	ctx := context.Background()
	csv := []byte("id,name,note\n1,Tokyo,\"a, b\"\n2,Zürich,\x00\xff\n")
	t.Run("PutGetStatDelete", func(t *testing.T) {
		s := newStore(t)
		d := ops.Dataset{Name: "cities", OwnerUserID: "u-1", ContentType: "text/csv", SHA256: "ab", Size: int64(len(csv)), Data: csv, UpdatedAt: base}
		require.NoError(t, s.PutDataset(ctx, d))
		got, err := s.GetDataset(ctx, "cities")
		require.NoError(t, err)
		require.True(t, bytes.Equal(csv, got.Data), "data not byte-exact")
		require.Equal(t, "u-1", got.OwnerUserID)
		require.Equal(t, "text/csv", got.ContentType)
		require.Equal(t, "ab", got.SHA256)
		require.Equal(t, int64(len(csv)), got.Size)
		require.True(t, base.Equal(got.UpdatedAt))
		st, err := s.StatDataset(ctx, "cities")
		require.NoError(t, err)
		require.Nil(t, st.Data, "StatDataset returned the data")
		require.Equal(t, "ab", st.SHA256)
		require.Equal(t, int64(len(csv)), st.Size)

		d2 := d
		d2.Data, d2.SHA256, d2.Size, d2.UpdatedAt = []byte("x\n1\n"), "cd", 4, base.Add(time.Minute)
		require.NoError(t, s.PutDataset(ctx, d2), "replace")
		got, err = s.GetDataset(ctx, "cities")
		require.NoError(t, err)
		require.Equal(t, "x\n1\n", string(got.Data))
		require.Equal(t, "cd", got.SHA256)

		require.NoError(t, s.DeleteDataset(ctx, "cities"))
		_, err = s.GetDataset(ctx, "cities")
		require.ErrorIs(t, err, ops.ErrNotFound)
		_, err = s.StatDataset(ctx, "cities")
		require.ErrorIs(t, err, ops.ErrNotFound)
		require.ErrorIs(t, s.DeleteDataset(ctx, "cities"), ops.ErrNotFound)
	})
	t.Run("CallerOwnsData", func(t *testing.T) {
		s := newStore(t)
		buf := append([]byte{}, csv...)
		require.NoError(t, s.PutDataset(ctx, ops.Dataset{Name: "d", ContentType: "text/csv", Data: buf, Size: int64(len(buf)), UpdatedAt: base}))
		buf[0] = 'X'
		got, err := s.GetDataset(ctx, "d")
		require.NoError(t, err)
		require.Equal(t, csv, got.Data, "the store kept the caller's slice")
		got.Data[0] = 'Y'
		again, err := s.GetDataset(ctx, "d")
		require.NoError(t, err)
		require.Equal(t, csv, again.Data, "the store handed out its own slice")
	})
	t.Run("ConcurrentPuts", func(t *testing.T) {
		s := newStore(t)
		const n = 16
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				data := []byte(fmt.Sprintf("v\n%d\n", i))
				if err := s.PutDataset(ctx, ops.Dataset{Name: fmt.Sprintf("d%d", i%4), ContentType: "text/csv", SHA256: fmt.Sprint(i), Data: data, Size: int64(len(data)), UpdatedAt: base}); err != nil {
					t.Errorf("put %d: %v", i, err)
				}
			}(i)
		}
		wg.Wait()
		for j := 0; j < 4; j++ {
			got, err := s.GetDataset(ctx, fmt.Sprintf("d%d", j))
			require.NoError(t, err)
			// Whichever put won, its digest and data belong together.
			require.Equal(t, fmt.Sprintf("v\n%s\n", got.SHA256), string(got.Data))
		}
	})
}

// RunKeyLookup runs the ledger.KeyLookup suite; newStore must return a
// ledger.Store that implements ledger.KeyLookup.
func RunKeyLookup(t *testing.T, newStore func(t *testing.T) ledger.Store) {
	t.Helper()
	ctx := context.Background()
	t.Run("EntriesByKey", func(t *testing.T) {
		s := newStore(t)
		_, ok := s.(ledger.KeyLookup)
		require.True(t, ok, "the store does not implement ledger.KeyLookup")
		l, err := ledger.New(s, ledger.Config{})
		require.NoError(t, err)
		es, err := l.EntriesByKey(ctx, "auth:0xabc")
		require.NoError(t, err)
		require.Empty(t, es)
		a := ledgertest.Entry("acme", "auth:0xabc", base)
		b := ledgertest.Entry("zeta", "auth:0xabc", base.Add(time.Second))
		c := ledgertest.Entry("acme", "auth:0xabd", base)
		for _, e := range []ledger.Entry{b, a, c} {
			_, _, err := l.RecordSettlement(ctx, e)
			require.NoError(t, err)
		}
		es, err = l.EntriesByKey(ctx, "auth:0xabc")
		require.NoError(t, err)
		require.Len(t, es, 2)
		require.Equal(t, "acme", es[0].Tenant, "oldest first")
		require.Equal(t, "zeta", es[1].Tenant)
		require.Equal(t, a.ID, es[0].ID)
		require.Equal(t, a.TxHash, es[0].TxHash)
		require.True(t, a.Time.Equal(es[0].Time))
		es, err = l.EntriesByKey(ctx, "auth:0xab")
		require.NoError(t, err)
		require.Empty(t, es, "a prefix matched")
		_, err = l.EntriesByKey(ctx, "")
		require.ErrorIs(t, err, ledger.ErrInvalid)
	})
}
