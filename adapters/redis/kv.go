package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/402claw/dispatcher/kv"
)

// ErrCrossSlot is returned (wrapped) by IncrAll on a Redis Cluster or Ring
// client when the keys do not all hash to one slot, so they cannot be updated
// by one script. Give the keys of one batch a common hash tag ("{tenant}").
var ErrCrossSlot = errors.New("redis kv: IncrAll keys do not share one hash slot; give them a common {hash tag}")

// Config configures a KV.
type Config struct {
	// Prefix is prepended to every key, to share one Redis between
	// deployments or tests. It should contain no braces (see the package
	// documentation on hash tags). Empty means no prefix.
	Prefix string
}

// KV is a kv.Store and kv.BatchIncrementer on Redis. It is safe for
// concurrent use, as the client is.
type KV struct {
	client goredis.UniversalClient
	prefix string
	// sameSlot is set for clients that route keys to shards by hash slot,
	// where a multi-key script must keep to one slot.
	sameSlot bool
}

var (
	_ kv.Store            = (*KV)(nil)
	_ kv.BatchIncrementer = (*KV)(nil)
)

// New returns a KV over client. The client stays the caller's: closing it is
// the caller's business.
func New(client goredis.UniversalClient, cfg Config) *KV {
	s := &KV{client: client, prefix: cfg.Prefix}
	switch client.(type) {
	case *goredis.ClusterClient, *goredis.Ring:
		s.sameSlot = true
	}
	return s
}

func (s *KV) key(k string) string { return s.prefix + k }

func wrap(op, key string, err error) error {
	return fmt.Errorf("redis kv: %s %q: %w", op, key, err)
}

// ttlMillis converts a TTL to whole milliseconds, rounding up so that a tiny
// positive TTL still expires rather than meaning "no expiry".
func ttlMillis(ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	ms := ttl / time.Millisecond
	if ttl%time.Millisecond != 0 {
		ms++
	}
	return int64(ms)
}

// Get implements kv.Store. A counter reads as its decimal text.
func (s *KV) Get(ctx context.Context, key string) ([]byte, error) {
	b, err := s.client.Get(ctx, s.key(key)).Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, kv.ErrNotFound
	}
	if err != nil {
		return nil, wrap("get", key, err)
	}
	return b, nil
}

// Set implements kv.Store.
func (s *KV) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if value == nil {
		value = []byte{}
	}
	exp := time.Duration(ttlMillis(ttl)) * time.Millisecond
	if err := s.client.Set(ctx, s.key(key), value, exp).Err(); err != nil {
		return wrap("set", key, err)
	}
	return nil
}

// SetNX implements kv.Store.
func (s *KV) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if value == nil {
		value = []byte{}
	}
	args := goredis.SetArgs{Mode: "NX"}
	if ms := ttlMillis(ttl); ms > 0 {
		args.TTL = time.Duration(ms) * time.Millisecond
	}
	err := s.client.SetArgs(ctx, s.key(key), value, args).Err()
	if errors.Is(err, goredis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, wrap("setnx", key, err)
	}
	return true, nil
}

// Delete implements kv.Store.
func (s *KV) Delete(ctx context.Context, key string) error {
	if err := s.client.Del(ctx, s.key(key)).Err(); err != nil {
		return wrap("delete", key, err)
	}
	return nil
}

// Incr implements kv.Store in one script: read, compare and write happen
// atomically on the server.
func (s *KV) Incr(ctx context.Context, key string, in kv.Increment) (int64, bool, error) {
	args := incrArgs(make([]any, 0, 7), in.Delta, in.Floor, in.Max, ttlMillis(in.TTL))
	res, err := incrScript.Run(ctx, s.client, []string{s.key(key)}, args...).Slice()
	if err != nil {
		return 0, false, wrap("incr", key, err)
	}
	if len(res) != 2 {
		return 0, false, wrap("incr", key, fmt.Errorf("unexpected reply %v", res))
	}
	applied, ok1 := res[0].(int64)
	n, err := parseValue(res[1])
	if !ok1 || err != nil {
		return 0, false, wrap("incr", key, fmt.Errorf("unexpected reply %v", res))
	}
	return n, applied == 1, nil
}

// IncrAll implements kv.BatchIncrementer in one script, all or none. On a
// Cluster or Ring client every key must hash to the same slot (ErrCrossSlot).
// A key listed twice sees the effect of its earlier increment.
func (s *KV) IncrAll(ctx context.Context, keys []string, ins []kv.Increment) ([]int64, int, error) {
	if len(keys) != len(ins) {
		return nil, -1, errors.New("redis kv: IncrAll: keys and increments differ in length")
	}
	if len(keys) == 0 {
		return []int64{}, -1, nil
	}
	full := make([]string, len(keys))
	args := make([]any, 0, 7*len(keys))
	for i, k := range keys {
		full[i] = s.key(k)
		in := ins[i]
		args = incrArgs(args, in.Delta, in.Floor, in.Max, ttlMillis(in.TTL))
	}
	if s.sameSlot {
		want := slot(full[0])
		for i, k := range full[1:] {
			if slot(k) != want {
				return nil, -1, fmt.Errorf("redis kv: incrall %q and %q: %w", keys[0], keys[i+1], ErrCrossSlot)
			}
		}
	}
	res, err := incrAllScript.Run(ctx, s.client, full, args...).Slice()
	if err != nil {
		return nil, -1, wrap("incrall", keys[0], err)
	}
	if len(res) != len(keys)+1 {
		return nil, -1, wrap("incrall", keys[0], fmt.Errorf("unexpected reply %v", res))
	}
	refused, ok := res[0].(int64)
	if !ok {
		return nil, -1, wrap("incrall", keys[0], fmt.Errorf("unexpected reply %v", res))
	}
	values := make([]int64, len(keys))
	for i := range values {
		if values[i], err = parseValue(res[i+1]); err != nil {
			return nil, -1, wrap("incrall", keys[0], err)
		}
	}
	return values, int(refused), nil
}

func parseValue(v any) (int64, error) {
	str, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("unexpected reply element %v", v)
	}
	return strconv.ParseInt(str, 10, 64)
}
