package ops_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/ops"
)

func TestAccountsKeysAreHashedAndShownOnce(t *testing.T) {
	ctx := context.Background()
	users := memory.NewUsers()
	now := time.Date(2026, 1, 2, 3, 4, 5, 678901234, time.UTC)
	acc, err := ops.NewAccounts(users, ops.AccountsConfig{Now: func() time.Time { return now }})
	require.NoError(t, err)
	u, err := acc.CreateUser(ctx, "u-1", "  Ada  ")
	require.NoError(t, err)
	require.Equal(t, "Ada", u.Name)
	require.Equal(t, now.Truncate(time.Microsecond), u.CreatedAt)

	k, secret, err := acc.IssueKey(ctx, "u-1", "ci")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(secret, ops.KeyPrefix))
	require.GreaterOrEqual(t, len(secret), len(ops.KeyPrefix)+43, "at least 256 bits of secret")
	require.Equal(t, ops.HashKey(secret), k.Hash)
	stored, err := users.KeyByHash(ctx, k.Hash)
	require.NoError(t, err)
	require.NotContains(t, stored.Hash, secret[len(ops.KeyPrefix):], "the secret is stored")

	got, err := acc.Authenticate(ctx, secret)
	require.NoError(t, err)
	require.Equal(t, "u-1", got.UserID)
	_, err = acc.Authenticate(ctx, secret+"x")
	require.ErrorIs(t, err, ops.ErrNotFound)
	_, err = acc.Authenticate(ctx, "not-a-key")
	require.ErrorIs(t, err, ops.ErrNotFound)

	_, other, err := acc.IssueKey(ctx, "u-1", "")
	require.NoError(t, err)
	require.NotEqual(t, secret, other, "two keys share a secret")

	require.NoError(t, acc.RevokeKey(ctx, k.ID))
	_, err = acc.Authenticate(ctx, secret)
	require.ErrorIs(t, err, ops.ErrNotFound, "a revoked key still authenticates")
	_, err = acc.Authenticate(ctx, other)
	require.NoError(t, err)

	_, _, err = acc.IssueKey(ctx, "ghost", "")
	require.ErrorIs(t, err, ops.ErrNotFound)
	_, err = acc.CreateUser(ctx, "u-1", "")
	require.ErrorIs(t, err, ops.ErrDuplicate)
	for _, bad := range []string{"", "-x", "a b", strings.Repeat("a", 65), "ü"} {
		_, err = acc.CreateUser(ctx, bad, "")
		require.ErrorIs(t, err, ops.ErrInvalid, "%q", bad)
	}
	_, err = acc.CreateUser(ctx, "u-2", "bad\x00name")
	require.ErrorIs(t, err, ops.ErrInvalid)
}

func TestAccountsDeterministicWithInjectedRand(t *testing.T) {
	users := memory.NewUsers()
	acc, err := ops.NewAccounts(users, ops.AccountsConfig{Rand: bytes.NewReader(bytes.Repeat([]byte{7}, 40))})
	require.NoError(t, err)
	_, err = acc.CreateUser(context.Background(), "u", "")
	require.NoError(t, err)
	k, secret, err := acc.IssueKey(context.Background(), "u", "")
	require.NoError(t, err)
	require.Equal(t, "key_0707070707070707", k.ID)
	require.Equal(t, ops.KeyPrefix+"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc", secret)
	_, _, err = acc.IssueKey(context.Background(), "u", "")
	require.Error(t, err, "an exhausted random source must fail, not make a weak key")
}
