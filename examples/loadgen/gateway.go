package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// gateway runs the example server as a child process and restarts it on
// the same address (and so the same store) after a kill.
type gateway struct {
	bin  string
	args []string
	base string // http://127.0.0.1:port
	log  io.Writer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error // the exit status, once done is closed
}

// buildServer compiles examples/httpserver into dir with the go tool.
func buildServer(ctx context.Context, dir string, out io.Writer) (string, error) {
	bin := filepath.Join(dir, "httpserver")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/402claw/dispatcher/examples/httpserver")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./examples/httpserver: %v\n%s", err, buf.String())
	}
	fmt.Fprintf(out, "built %s in %s\n", bin, time.Since(start).Round(time.Millisecond))
	return bin, nil
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago; the gateway keeps it across restarts.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// start launches the server and waits until its health route answers.
func (g *gateway) start(ctx context.Context) error {
	cmd := exec.Command(g.bin, g.args...)
	cmd.Stdout, cmd.Stderr = g.log, g.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", g.bin, err)
	}
	done := make(chan struct{})
	g.mu.Lock()
	g.cmd, g.done = cmd, done
	g.mu.Unlock()
	go func() {
		err := cmd.Wait()
		g.mu.Lock()
		g.err = err
		g.mu.Unlock()
		close(done)
	}()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("the gateway exited while starting: %v (see its log)", g.exitErr())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		resp, err := client.Get(g.base + "/__platform/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("the gateway did not answer its health check within 90s")
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (g *gateway) exitErr() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// kill SIGKILLs the server and waits for it to be gone.
func (g *gateway) kill() {
	g.mu.Lock()
	cmd, done := g.cmd, g.done
	g.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// stop asks the server to shut down gracefully (SIGTERM), and kills it if
// it has not exited within grace.
func (g *gateway) stop(grace time.Duration) error {
	g.mu.Lock()
	cmd, done := g.cmd, g.done
	g.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return fmt.Errorf("the gateway had already exited: %v", g.exitErr())
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return g.exitErr()
	case <-time.After(grace):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
		return fmt.Errorf("the gateway did not stop within %s of SIGTERM; killed", grace)
	}
}

// exited reports whether the current process has exited on its own.
func (g *gateway) exited() bool {
	g.mu.Lock()
	done := g.done
	g.mu.Unlock()
	select {
	case <-done:
		return true
	default:
		return false
	}
}

var verifyOK = regexp.MustCompile(`audit chain OK: (\d+) records`)

// verifyChain runs "httpserver verify -store URL": exit 0 means the chain
// is whole.
func verifyChain(ctx context.Context, bin, store string) chainResult {
	res := chainResult{Ran: true, How: "httpserver verify"}
	cmd := exec.CommandContext(ctx, bin, "verify", "-store", store)
	cmd.Env = append(os.Environ(), "STORE_URL=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		res.Err = fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
		return res
	}
	if m := verifyOK.FindSubmatch(out); m != nil {
		res.Records, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	return res
}
