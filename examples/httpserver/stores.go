package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	goredis "github.com/redis/go-redis/v9"
	_ "modernc.org/sqlite" // the pure-Go SQLite driver, registered as "sqlite"

	"github.com/402claw/dispatcher/adapters/memory"
	"github.com/402claw/dispatcher/adapters/postgres"
	"github.com/402claw/dispatcher/adapters/redis"
	"github.com/402claw/dispatcher/adapters/sqlite"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/metrics"
	"github.com/402claw/dispatcher/ops"
	"github.com/402claw/dispatcher/tenant"
)

// sqliteDSN is the DSN the adapter's documentation recommends: WAL, a busy
// timeout, and immediate write transactions.
func sqliteDSN(path string) string {
	return "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate"
}

// backends are the stores the server runs on, opened from -store and -kv.
type backends struct {
	kv       kv.Store
	ledger   ledger.Store
	events   metrics.Store
	tenants  tenant.Store
	users    ops.Users
	datasets ops.Datasets
	closers  []func()
}

func (b *backends) Close() {
	for i := len(b.closers) - 1; i >= 0; i-- {
		b.closers[i]()
	}
}

// openURL opens one store URL: memory, sqlite:PATH, postgres://...,
// redis://... (KV only).
func openURL(ctx context.Context, url string, b *backends) (any, error) {
	switch {
	case url == "memory":
		return nil, nil
	case strings.HasPrefix(url, "sqlite:"):
		path := strings.TrimPrefix(url, "sqlite:")
		path = strings.TrimPrefix(path, "//")
		if path == "" {
			return nil, fmt.Errorf("%q: sqlite: needs a file path, as in sqlite:./data/dispatcher.db", url)
		}
		if dir := filepath.Dir(path); dir != "." {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, fmt.Errorf("creating %s: %w", dir, err)
			}
		}
		db, err := sql.Open("sqlite", sqliteDSN(path))
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", path, err)
		}
		// Reads run on pooled connections: keep them open (database/sql
		// keeps 2 idle by default), so concurrent requests do not reopen
		// connections and prepare statements again.
		db.SetMaxIdleConns(32)
		s, err := sqlite.New(db)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("opening %s: %w", path, err)
		}
		b.closers = append(b.closers, func() { db.Close() })
		return s, nil
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			return nil, fmt.Errorf("postgres: %w", err)
		}
		if err := pool.Ping(ctx); err != nil {
			pool.Close()
			return nil, fmt.Errorf("postgres: %w", err)
		}
		s, err := postgres.New(ctx, pool, postgres.Config{})
		if err != nil {
			pool.Close()
			return nil, err
		}
		b.closers = append(b.closers, pool.Close)
		return s, nil
	case strings.HasPrefix(url, "redis://"), strings.HasPrefix(url, "rediss://"):
		opt, err := goredis.ParseURL(url)
		if err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
		// Fail fast while Redis is away: requests are refused (fail closed)
		// at once instead of after seconds of client-side retries.
		opt.MaxRetries = -1
		opt.DialerRetries = 1
		if opt.DialTimeout == 0 || opt.DialTimeout > 2*time.Second {
			opt.DialTimeout = 2 * time.Second
		}
		c := goredis.NewClient(opt)
		if err := c.Ping(ctx).Err(); err != nil {
			c.Close()
			return nil, fmt.Errorf("redis: %w", err)
		}
		b.closers = append(b.closers, func() { c.Close() })
		return redis.New(c, redis.Config{}), nil
	}
	return nil, fmt.Errorf("%q is not memory, sqlite:PATH, postgres://... or redis://...", url)
}

func openBackends(ctx context.Context, c config, log *slog.Logger) (*backends, error) {
	b := &backends{}
	st, err := openURL(ctx, c.store, b)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("-store: %w", err)
	}
	if st == nil {
		b.ledger = memory.NewLedger()
		if b.events, err = memory.NewEvents(memory.EventsConfig{}); err != nil {
			return nil, err
		}
		b.tenants, b.users, b.datasets = memory.NewTenants(), memory.NewUsers(), memory.NewDatasets()
	} else {
		var ok bool
		if b.ledger, ok = st.(ledger.Store); !ok {
			b.Close()
			return nil, fmt.Errorf("-store: %s cannot hold the ledger", c.store)
		}
		if b.events, ok = st.(metrics.Store); !ok {
			log.Warn("the store keeps no usage events; analytics are kept in memory", "store", c.store)
			if b.events, err = memory.NewEvents(memory.EventsConfig{}); err != nil {
				return nil, err
			}
		}
		b.tenants, _ = st.(tenant.Store)
		b.users, _ = st.(ops.Users)
		b.datasets, _ = st.(ops.Datasets)
	}
	kst := st
	if c.kv != c.store {
		if kst, err = openURL(ctx, c.kv, b); err != nil {
			b.Close()
			return nil, fmt.Errorf("-kv: %w", err)
		}
	}
	if kst == nil {
		b.kv = memory.NewKV()
	} else {
		var ok bool
		if b.kv, ok = kst.(kv.Store); !ok {
			b.Close()
			return nil, fmt.Errorf("-kv: %s cannot hold counters", c.kv)
		}
	}
	return b, nil
}
