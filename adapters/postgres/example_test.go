package postgres_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/402claw/dispatcher/adapters/postgres"
	"github.com/402claw/dispatcher/kv"
)

// Example opens a pool, migrates the store and reserves a paid request's
// price against a tenant's daily spend cap (micro-USD). It needs a
// PostgreSQL server, so it is compiled but not run by go test.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := postgres.New(ctx, pool, postgres.Config{Schema: "dispatcher"})
	if err != nil {
		log.Fatal(err) // unreachable database, or a schema from a newer build
	}

	const capMicroUSD, price = 5_000_000, 10_000 // $5.00 a day, $0.01 a call
	day := time.Now().UTC().Format("20060102")
	spent, ok, err := store.Incr(ctx, "spend:{acme}:day:"+day, kv.Increment{Delta: price, Max: capMicroUSD, TTL: 48 * time.Hour})
	if err != nil {
		log.Fatal(err) // fail closed
	}
	fmt.Println("reserved:", ok, "spent today (micro-USD):", spent)

	// Now and then, from a maintenance job:
	if _, err := store.PurgeExpired(ctx); err != nil {
		log.Print(err)
	}
}
