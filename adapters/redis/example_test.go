package redis_test

import (
	"context"
	"fmt"
	"log"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/402claw/dispatcher/adapters/redis"
	"github.com/402claw/dispatcher/kv"
)

// Example wires the adapter to a client and checks a request against a
// tenant's daily and monthly quotas in one atomic round trip. It needs a
// Redis server, so it is compiled but not run by go test.
func Example() {
	client := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:6379"})
	defer client.Close()
	store := redis.New(client, redis.Config{Prefix: "dispatcher:"})

	ctx := context.Background()
	day := time.Now().UTC().Format("20060102")
	// {acme} is the hash tag: both counters live on one Redis Cluster slot.
	keys := []string{"q:{acme}:day:" + day, "q:{acme}:month:" + day[:6]}
	ins := []kv.Increment{
		{Delta: 1, Max: 1000, TTL: 48 * time.Hour},
		{Delta: 1, Max: 20000, TTL: 32 * 24 * time.Hour},
	}
	values, refused, err := store.IncrAll(ctx, keys, ins)
	if err != nil {
		log.Fatal(err) // fail closed: no answer from Redis, no admission
	}
	if refused >= 0 {
		fmt.Println("quota exceeded:", keys[refused])
		return
	}
	fmt.Println("admitted; used today:", values[0])
}
