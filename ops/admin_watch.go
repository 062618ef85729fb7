package ops

import (
	"context"
	"errors"
	"log/slog"
	"sync"
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

	// lock, when set, is held around each poll's load, compare and swap
	// (AdminHandler.Watch passes its change lock, so a poll never swaps in
	// a directory older than a change this process just made).
	lock sync.Locker
}

// Watch runs WatchWith over the handler's store and registry, in step with
// the handler's own changes: a poll and a change never interleave, so the
// registry never goes back, even for one interval, to a directory older
// than a change this replica made. Without a store it returns at once.
func (h *AdminHandler) Watch(ctx context.Context, cfg WatchConfig) error {
	if h.cfg.Store == nil {
		return nil
	}
	cfg.lock = &h.mu
	if cfg.Logger == nil {
		cfg.Logger = h.log
	}
	return WatchWith(ctx, h.cfg.Store, h.cfg.Registry, cfg)
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
		d, v, err := poll(ctx, store, registry, seen, cfg.lock)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("tenant directory poll failed; keeping the directory in force", "err", err)
			}
			continue
		}
		seen = v
		if d != nil && cfg.OnSwap != nil {
			cfg.OnSwap(d, v)
		}
	}
}

// poll loads the stored directory and swaps it in when its version is new
// and not already in force. It returns the directory it swapped in (nil
// when none) and the stored version.
func poll(ctx context.Context, store tenant.Store, registry *tenant.Registry, seen string, lock sync.Locker) (*tenant.Directory, string, error) {
	if lock != nil {
		lock.Lock()
		defer lock.Unlock()
	}
	d, err := tenant.Load(ctx, store)
	if err != nil {
		return nil, seen, err
	}
	v := Version(d)
	if v == seen || Version(registry.Load()) == v {
		return nil, v, nil // unchanged, or this replica made the change itself
	}
	registry.Swap(d)
	return d, v, nil
}
