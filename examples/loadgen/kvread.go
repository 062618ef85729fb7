package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	goredis "github.com/redis/go-redis/v9"

	"github.com/402claw/dispatcher/adapters/postgres"
	"github.com/402claw/dispatcher/adapters/redis"
	"github.com/402claw/dispatcher/adapters/sqlite"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/x402/channel"
)

// openKV opens the gateway's -kv store through its adapter, for reading
// the channel state after the run: sqlite:PATH, redis://... or
// postgres://... (a memory store dies with the gateway).
func openKV(ctx context.Context, url string) (kv.Store, func(), error) {
	st, closeFn, err := openStore(ctx, url)
	if err != nil {
		return nil, nil, err
	}
	ks, ok := st.(kv.Store)
	if !ok {
		closeFn()
		return nil, nil, fmt.Errorf("%w: %s holds no kv.Store", errNoLedger, url)
	}
	return ks, closeFn, nil
}

// openStore opens a store URL through its adapter: sqlite:PATH,
// postgres://... or redis://... .
func openStore(ctx context.Context, url string) (any, func(), error) {
	switch {
	case strings.HasPrefix(url, "sqlite:"):
		path := strings.TrimPrefix(strings.TrimPrefix(url, "sqlite:"), "//")
		// The DSN the adapter's documentation recommends, minus the
		// write tuning: this handle only reads.
		db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)")
		if err != nil {
			return nil, nil, err
		}
		s, err := sqlite.New(db)
		if err != nil {
			db.Close()
			return nil, nil, fmt.Errorf("opening %s: %w", path, err)
		}
		return s, func() { db.Close() }, nil
	case isPostgres(url):
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			return nil, nil, fmt.Errorf("postgres: %w", err)
		}
		s, err := postgres.New(ctx, pool, postgres.Config{})
		if err != nil {
			pool.Close()
			return nil, nil, fmt.Errorf("postgres: %w", err)
		}
		return s, pool.Close, nil
	case strings.HasPrefix(url, "redis://"), strings.HasPrefix(url, "rediss://"):
		opt, err := goredis.ParseURL(url)
		if err != nil {
			return nil, nil, fmt.Errorf("redis: %w", err)
		}
		c := goredis.NewClient(opt)
		return redis.New(c, redis.Config{}), func() { c.Close() }, nil
	}
	return nil, nil, fmt.Errorf("%w: store %q", errNoLedger, url)
}

// readChannelStates loads the gateway's state of each channel in ids
// (channels without state are left out), through channel.Service.Load on
// the gateway's default key prefix, and reports whether the claimer's
// lease is still taken (a pass a SIGKILL cut off leaves it until its TTL
// runs out, and no claim is made meanwhile). authorizer is the
// facilitator's receiverAuthorizer (the scheme needs one; reading does not
// use it).
func readChannelStates(ctx context.Context, kvURL, authorizer string, ids []string) (map[string]channel.State, bool, error) {
	st, closeFn, err := openKV(ctx, kvURL)
	if err != nil {
		return nil, false, err
	}
	defer closeFn()
	sc, err := channel.NewScheme(channel.SchemeConfig{ReceiverAuthorizer: authorizer})
	if err != nil {
		return nil, false, err
	}
	svc, err := channel.New(st, channel.Config{Scheme: sc})
	if err != nil {
		return nil, false, err
	}
	_, err = st.Get(ctx, svc.Prefix()+"claimer:lease")
	leased := err == nil
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		return nil, false, err
	}
	out := make(map[string]channel.State, len(ids))
	for _, id := range ids {
		s, err := svc.Load(ctx, id)
		switch {
		case errors.Is(err, channel.ErrNotFound):
		case err != nil:
			return nil, false, fmt.Errorf("channel %s: %w", id, err)
		default:
			out[strings.ToLower(id)] = s
		}
	}
	return out, leased, nil
}

// earlierChannels reports whether the KV store already holds the channel
// claim queue of an earlier run. The gateway's channel keys are not per
// run: a queue left by another run names channels this run's escrow does
// not know, and the claims that carry them would be refused.
func earlierChannels(ctx context.Context, kvURL string) (bool, error) {
	if kvURL == "memory" {
		return false, nil
	}
	if path, ok := strings.CutPrefix(kvURL, "sqlite:"); ok {
		if _, err := os.Stat(strings.TrimPrefix(path, "//")); errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
	}
	st, closeFn, err := openKV(ctx, kvURL)
	if err != nil {
		return false, err
	}
	defer closeFn()
	_, err = st.Get(ctx, "x402ch:q:tail")
	switch {
	case errors.Is(err, kv.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}
