package payment_test

import (
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"

	rkv "github.com/402claw/dispatcher/adapters/redis"
	"github.com/402claw/dispatcher/adapters/sqlite"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/ledger"
	"github.com/402claw/dispatcher/x402/localfacilitator"
)

// One authorization spent every way at once (derived key, two client
// keys in both headers, both host-routed twins and their /t/ paths), on
// the real stores: one worker call, one settlement, no 500.
func TestOneAuthorizationAllWaysOnStores(t *testing.T) {
	t.Parallel()
	stores := map[string]func(t *testing.T) (kv.Store, ledger.Store){
		"sqlite": func(t *testing.T) (kv.Store, ledger.Store) {
			db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "p.db")+
				"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate")
			require.NoError(t, err)
			t.Cleanup(func() { _ = db.Close() })
			s, err := sqlite.New(db)
			require.NoError(t, err)
			return s, s
		},
	}
	if u := os.Getenv("TEST_REDIS_URL"); u != "" {
		stores["redis"] = func(t *testing.T) (kv.Store, ledger.Store) {
			opt, err := goredis.ParseURL(u)
			require.NoError(t, err)
			c := goredis.NewClient(opt)
			t.Cleanup(func() { _ = c.Close() })
			return rkv.New(c, rkv.Config{Prefix: fmt.Sprintf("authlayout%d:", time.Now().UnixNano())}), nil
		}
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			for round := 0; round < 5; round++ {
				e := newEnv(t, nil)
				kvs, ls := open(t)
				e.rebuild(rebuildOpts{kv: kvs, lstore: ls, dir: twinsDir})
				hdr := e.pay("http://a.example/rows?limit=2", 2, localfacilitator.SignOptions{})
				var wg sync.WaitGroup
				for _, tg := range []string{"http://a.example/rows?limit=2", "http://b.example/rows?limit=2",
					"http://gw.local/t/paid/rows?limit=2", "http://gw.local/t/twin/rows?limit=2"} {
					for _, k := range []string{"", "k1", "k2"} {
						for _, hn := range []string{"X-Payment-Idempotency-Key", "Idempotency-Key"} {
							h := hdr.Clone()
							if k != "" {
								h.Set(hn, k)
							}
							wg.Add(1)
							go func(tg string, h http.Header) {
								defer wg.Done()
								rec := e.do(tg, h)
								assert.Less(t, rec.Code, 500, rec.Body.String())
							}(tg, h)
						}
					}
				}
				wg.Wait()
				require.LessOrEqual(t, e.calls.Load(), int64(1))
				require.LessOrEqual(t, e.fac.settles.Load(), int64(1))
			}
		})
	}
}
