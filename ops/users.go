package ops

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Sentinel errors of the ops ports. Adapters return them (wrapped or not)
// and callers test them with errors.Is.
var (
	// ErrNotFound: no user, key or data set with that id.
	ErrNotFound = errors.New("ops: not found")
	// ErrDuplicate: a user, key or key hash with that id already exists;
	// nothing was written.
	ErrDuplicate = errors.New("ops: already exists")
	// ErrInvalid: the input failed validation; nothing was written.
	ErrInvalid = errors.New("ops: invalid")
)

// User is a marketplace user who may own tenants and data sets.
type User struct {
	// ID identifies the user (see ValidID); tenants name it in ownerUserId.
	ID string `json:"id"`
	// Name is for people.
	Name string `json:"name"`
	// CreatedAt is when the user was created, UTC.
	CreatedAt time.Time `json:"createdAt"`
}

// APIKey is an owner's API key as stored: its secret is never kept, only
// the SHA-256 of it.
type APIKey struct {
	// ID identifies the key (to revoke it); it is not secret.
	ID string `json:"id"`
	// UserID is the owner the key acts for.
	UserID string `json:"userId"`
	// Hash is the lowercase hex SHA-256 of the secret.
	Hash string `json:"-"`
	// Label is for people.
	Label string `json:"label,omitempty"`
	// CreatedAt is when the key was issued, UTC.
	CreatedAt time.Time `json:"createdAt"`
	// RevokedAt is when the key was revoked; zero while it is active.
	RevokedAt time.Time `json:"revokedAt,omitzero"`
}

// Active reports whether the key has not been revoked.
func (k APIKey) Active() bool { return k.RevokedAt.IsZero() }

// Users is the storage port of users and their API keys (the users and
// api_keys tables of the SQL adapters). Implementations are safe for
// concurrent use and keep times at microsecond precision in UTC.
type Users interface {
	// CreateUser stores u; ErrDuplicate if a user with u.ID exists.
	CreateUser(ctx context.Context, u User) error
	// GetUser returns the user with that id, or ErrNotFound.
	GetUser(ctx context.Context, id string) (User, error)
	// CreateKey stores k; ErrNotFound if its user does not exist,
	// ErrDuplicate if its id or hash is taken.
	CreateKey(ctx context.Context, k APIKey) error
	// KeyByHash returns the key whose Hash is hash, revoked or not, or
	// ErrNotFound.
	KeyByHash(ctx context.Context, hash string) (APIKey, error)
	// RevokeKey marks the key revoked at at; ErrNotFound if no key has that
	// id. Revoking a revoked key keeps its first revocation time.
	RevokeKey(ctx context.Context, id string, at time.Time) error
}

// KeyPrefix starts every API key secret, so that a leaked key is easy to
// recognise (and to tell from the admin token).
const KeyPrefix = "claw_"

// maxIDLen bounds user ids; maxNameLen user names and key labels.
const (
	maxIDLen   = 64
	maxNameLen = 200
)

// ValidID reports whether s is a well-formed user or key id: 1 to 64 bytes
// of ASCII letters, digits, '-', '_' and '.', starting with a letter or digit.
func ValidID(s string) bool {
	if s == "" || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '-' || c == '_' || c == '.') && i > 0:
		default:
			return false
		}
	}
	return true
}

// HashKey returns the stored form of an API key secret: the lowercase hex
// SHA-256 of its bytes.
func HashKey(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// AccountsConfig configures Accounts. The zero value is valid.
type AccountsConfig struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Rand is the source of key secrets and ids; nil means crypto/rand.
	Rand io.Reader
}

// Accounts manages users and API keys over a Users store: it validates
// input, makes secrets and ids, and authenticates keys. It keeps no cache,
// so a revoked key stops working on the next request on every replica.
type Accounts struct {
	users Users
	now   func() time.Time
	rand  io.Reader
}

// NewAccounts returns Accounts over users.
func NewAccounts(users Users, cfg AccountsConfig) (*Accounts, error) {
	if users == nil {
		return nil, errors.New("ops: NewAccounts: nil Users")
	}
	a := &Accounts{users: users, now: cfg.Now, rand: cfg.Rand}
	if a.now == nil {
		a.now = time.Now
	}
	if a.rand == nil {
		a.rand = rand.Reader
	}
	return a, nil
}

func (a *Accounts) clock() time.Time { return a.now().UTC().Truncate(time.Microsecond) }

// CreateUser validates and stores a new user.
func (a *Accounts) CreateUser(ctx context.Context, id, name string) (User, error) {
	if !ValidID(id) {
		return User{}, fmt.Errorf("%w: id %q must be 1 to %d letters, digits, '-', '_' or '.'", ErrInvalid, clip(id), maxIDLen)
	}
	name = strings.TrimSpace(name)
	if len(name) > maxNameLen || strings.ContainsFunc(name, isControl) {
		return User{}, fmt.Errorf("%w: name must be at most %d printable bytes", ErrInvalid, maxNameLen)
	}
	u := User{ID: id, Name: name, CreatedAt: a.clock()}
	if err := a.users.CreateUser(ctx, u); err != nil {
		return User{}, fmt.Errorf("ops: create user %s: %w", id, err)
	}
	return u, nil
}

// IssueKey makes a new API key for the user and returns it with its secret.
// The secret is shown this once: only its hash is stored.
func (a *Accounts) IssueKey(ctx context.Context, userID, label string) (APIKey, string, error) {
	if !ValidID(userID) {
		return APIKey{}, "", fmt.Errorf("%w: user %q", ErrNotFound, clip(userID))
	}
	if len(label) > maxNameLen || strings.ContainsFunc(label, isControl) {
		return APIKey{}, "", fmt.Errorf("%w: label must be at most %d printable bytes", ErrInvalid, maxNameLen)
	}
	var raw [32 + 8]byte
	if _, err := io.ReadFull(a.rand, raw[:]); err != nil {
		return APIKey{}, "", fmt.Errorf("ops: issue key: %w", err)
	}
	secret := KeyPrefix + base64.RawURLEncoding.EncodeToString(raw[:32])
	k := APIKey{
		ID:        "key_" + hex.EncodeToString(raw[32:]),
		UserID:    userID,
		Hash:      HashKey(secret),
		Label:     label,
		CreatedAt: a.clock(),
	}
	if err := a.users.CreateKey(ctx, k); err != nil {
		return APIKey{}, "", fmt.Errorf("ops: issue key for %s: %w", userID, err)
	}
	return k, secret, nil
}

// Authenticate returns the active key whose secret is secret. An unknown or
// revoked key is ErrNotFound. It reads the store on every call.
func (a *Accounts) Authenticate(ctx context.Context, secret string) (APIKey, error) {
	if !strings.HasPrefix(secret, KeyPrefix) || len(secret) > 128 {
		return APIKey{}, ErrNotFound
	}
	k, err := a.users.KeyByHash(ctx, HashKey(secret))
	if err != nil {
		return APIKey{}, err
	}
	if !k.Active() {
		return APIKey{}, fmt.Errorf("%w: key %s was revoked", ErrNotFound, k.ID)
	}
	return k, nil
}

// RevokeKey revokes the key with that id; it stops authenticating at once.
func (a *Accounts) RevokeKey(ctx context.Context, id string) error {
	if !ValidID(id) {
		return fmt.Errorf("%w: key %q", ErrNotFound, clip(id))
	}
	if err := a.users.RevokeKey(ctx, id, a.clock()); err != nil {
		return fmt.Errorf("ops: revoke key %s: %w", id, err)
	}
	return nil
}

// User returns the user with that id.
func (a *Accounts) User(ctx context.Context, id string) (User, error) {
	if !ValidID(id) {
		return User{}, fmt.Errorf("%w: user %q", ErrNotFound, clip(id))
	}
	return a.users.GetUser(ctx, id)
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// clip shortens a client value quoted back in an error message.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
