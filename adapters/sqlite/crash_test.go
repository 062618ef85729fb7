package sqlite_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/402claw/dispatcher/adapters/sqlite"
	"github.com/402claw/dispatcher/kv"
	"github.com/402claw/dispatcher/ledger"
)

// The crash test re-executes this test binary as child processes that
// append settlements and report each one on stdout once it committed; the
// parent SIGKILLs them at random moments and then checks the file.
const (
	envCrashDB     = "DISPATCHER_SQLITE_CRASH_DB"
	envCrashPrefix = "DISPATCHER_SQLITE_CRASH_PREFIX"
	crashWriters   = 3 // goroutines per child
	crashChildren  = 2 // concurrent child processes per round
	crashRounds    = 6
)

// TestCrashChild is the child's body; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	path, prefix := os.Getenv(envCrashDB), os.Getenv(envCrashPrefix)
	if path == "" {
		t.Skip("only runs as the child of TestCrashSafety")
	}
	s, err := sqlite.New(openDB(t, path))
	require.NoError(t, err)
	l, err := ledger.New(s, ledger.Config{})
	require.NoError(t, err)
	ctx := context.Background()
	var out sync.Mutex
	var wg sync.WaitGroup
	// The parent kills us long before; the deadline only stops orphans.
	deadline := time.Now().Add(time.Minute)
	for g := 0; g < crashWriters; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				key := fmt.Sprintf("%s-g%d-%d", prefix, g, i)
				_, _, err := l.RecordSettlement(ctx, ledger.Entry{
					Tenant: "crash", IdempotencyKey: key, Amount: "0.01", AmountAtomic: "10000", Status: ledger.StatusSettled,
				})
				if err != nil {
					fmt.Fprintln(os.Stderr, "child:", err)
					os.Exit(3)
				}
				out.Lock()
				fmt.Fprintf(os.Stdout, "committed %s\n", key)
				out.Unlock()
			}
		}()
	}
	// Durable counters and idempotency keys, as a paid request writes
	// them: a SetNX, then a volatile rate-limit key and a durable usage
	// counter in one IncrAll; "counted" is printed once both were answered.
	for g := 0; g < crashWriters; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				key := fmt.Sprintf("%s-k%d-%d", prefix, g, i)
				won, err := s.SetNX(ctx, "idem:"+key, []byte("1"), time.Hour)
				if err == nil && !won {
					err = fmt.Errorf("SetNX %s: a fresh key was taken", key)
				}
				if err == nil {
					var refused int
					_, refused, err = s.IncrAll(ctx, []string{"rate:" + prefix, crashUnits}, []kv.Increment{
						{Floor: 0, Delta: 1, Max: kv.Unbounded, TTL: time.Hour, Volatile: true},
						{Delta: 1, Max: kv.Unbounded},
					})
					if err == nil && refused >= 0 {
						err = fmt.Errorf("IncrAll refused %d", refused)
					}
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "child:", err)
					os.Exit(3)
				}
				out.Lock()
				fmt.Fprintf(os.Stdout, "counted %s\n", key)
				out.Unlock()
			}
		}()
	}
	wg.Wait()
}

// crashUnits is the durable counter every child's kv writers increment.
const crashUnits = "units"

// child is a running child process and the keys it reported.
type child struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	keys    []string
	counted []string // idempotency keys whose unit was acknowledged
	done    chan struct{}
	n       chan struct{} // receives after each reported key
}

func startChild(t *testing.T, path, prefix string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envCrashDB+"="+path, envCrashPrefix+"="+prefix)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	c := &child{cmd: cmd, done: make(chan struct{}), n: make(chan struct{}, 1<<16)}
	go func() {
		defer close(c.done)
		r := bufio.NewReader(stdout)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				// A line cut by the kill has no newline: it was not reported.
				_, _ = io.Copy(io.Discard, r)
				return
			}
			if key, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "counted "); ok {
				c.mu.Lock()
				c.counted = append(c.counted, key)
				c.mu.Unlock()
			}
			if key, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "committed "); ok {
				c.mu.Lock()
				c.keys = append(c.keys, key)
				c.mu.Unlock()
				c.n <- struct{}{}
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.done
		_ = cmd.Wait()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("child stderr: %s", stderr.String())
		}
	})
	return c
}

func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes; skipped with -short")
	}
	if os.Getenv(envCrashDB) != "" {
		t.Skip("in a child")
	}
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "crash.db")
	reported := map[string]bool{}
	counted := map[string]bool{}
	for round := 0; round < crashRounds; round++ {
		children := make([]*child, crashChildren)
		for j := range children {
			children[j] = startChild(t, path, fmt.Sprintf("r%dc%d", round, j))
		}
		// Let each child commit a few settlements, then kill them all at a
		// random moment, most likely in the middle of a transaction.
		for _, c := range children {
			for i := 0; i < 5; i++ {
				select {
				case <-c.n:
				case <-c.done:
					t.Fatalf("round %d: child exited early", round)
				case <-time.After(2 * time.Minute):
					t.Fatalf("round %d: child made no progress", round)
				}
			}
		}
		time.Sleep(time.Duration(rand.N(150)) * time.Millisecond)
		for _, c := range children {
			require.NoError(t, c.cmd.Process.Kill()) // SIGKILL
		}
		roundReported := 0
		for _, c := range children {
			<-c.done
			_ = c.cmd.Wait()
			c.mu.Lock()
			for _, k := range c.keys {
				require.False(t, reported[k], "key %s reported twice", k)
				reported[k] = true
			}
			roundReported += len(c.keys)
			for _, k := range c.counted {
				require.False(t, counted[k], "unit %s reported twice", k)
				counted[k] = true
			}
			c.mu.Unlock()
		}

		// Restart: a fresh handle on the file, as after a real crash.
		db := openDB(t, path)
		s, err := sqlite.New(db)
		require.NoError(t, err)
		l, err := ledger.New(s, ledger.Config{})
		require.NoError(t, err)
		n, err := l.Verify(ctx)
		require.NoError(t, err, "round %d: the chain verifies after the crash", round)

		entries, err := s.ListEntries(ctx, ledger.ListEntriesParams{Tenant: "crash"})
		require.NoError(t, err)
		seen := make(map[string]bool, len(entries))
		for _, e := range entries {
			require.False(t, seen[e.IdempotencyKey], "key %s stored twice", e.IdempotencyKey)
			seen[e.IdempotencyKey] = true
		}
		for k := range reported {
			require.True(t, seen[k], "round %d: committed key %s is missing", round, k)
		}
		require.Equal(t, int64(len(entries)), n, "one audit record per entry")
		// A writer may have committed without living to report it, at most
		// one settlement per writer per round.
		unreported := len(entries) - len(reported)
		require.GreaterOrEqual(t, unreported, 0)
		require.LessOrEqual(t, unreported, (round+1)*crashWriters*crashChildren)
		// Every acknowledged unit is counted and its idempotency key kept;
		// at most one unacknowledged unit per kv writer per round is extra.
		units, _, err := s.Incr(ctx, crashUnits, kv.Increment{Max: kv.Unbounded})
		require.NoError(t, err)
		require.GreaterOrEqual(t, units, int64(len(counted)), "round %d: an acknowledged durable increment was lost", round)
		require.LessOrEqual(t, units, int64(len(counted)+(round+1)*crashWriters*crashChildren), "round %d", round)
		for k := range counted {
			_, err := s.Get(ctx, "idem:"+k)
			require.NoError(t, err, "round %d: acknowledged idempotency key %s is missing", round, k)
		}
		var volatileRows int
		require.NoError(t, db.QueryRow(`SELECT count(*) FROM kv WHERE key LIKE 'rate:%'`).Scan(&volatileRows))
		require.Zero(t, volatileRows, "volatile counters never reach the file")
		t.Logf("round %d: %d units acknowledged so far, %d counted", round, len(counted), units)
		t.Logf("round %d: %d reported this round, %d entries, %d committed but unreported so far", round, roundReported, len(entries), unreported)
		require.NoError(t, db.Close())
	}
}
