package ops

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/402claw/dispatcher/tenant"
)

// DefaultWatchInterval is how often Watch polls the store: changes made on
// another replica are served here within about this long (the design asks
// for 2 seconds).
const DefaultWatchInterval = time.Second

// WatchConfig configures WatchWith. The zero value is valid.
type WatchConfig struct {
	// Interval between polls; <= 0 means DefaultWatchInterval.
	Interval time.Duration
	// Logger receives failed polls; nil discards them.
	Logger *slog.Logger
	// OnSwap, when set, is called after each directory the watcher puts in
	// force, with its Version.
	OnSwap func(d *tenant.Directory, version string)
}

// Watch keeps registry in step with the directory in store: every interval
// it loads the stored tenants and, when their version differs from the one
// it last saw, swaps them in. It returns when ctx is done (with nil). A
// failed load or an invalid stored directory keeps the directory in force
// and is retried at the next poll.
func Watch(ctx context.Context, store tenant.Store, registry *tenant.Registry, interval time.Duration) error {
	return WatchWith(ctx, store, registry, WatchConfig{Interval: interval})
}

// WatchWith is Watch with a WatchConfig.
func WatchWith(ctx context.Context, store tenant.Store, registry *tenant.Registry, cfg WatchConfig) error {
	if store == nil || registry == nil {
		return errors.New("ops: Watch: nil store or registry")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultWatchInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	seen := Version(registry.Load())
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		d, err := tenant.Load(ctx, store)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("tenant directory poll failed; keeping the directory in force", "err", err)
			}
			continue
		}
		v := Version(d)
		if v == seen {
			continue
		}
		seen = v
		if Version(registry.Load()) == v {
			continue // this replica made the change itself
		}
		registry.Swap(d)
		if cfg.OnSwap != nil {
			cfg.OnSwap(d, v)
		}
	}
}
