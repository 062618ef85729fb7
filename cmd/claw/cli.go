package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// DefaultURL is the example server's address.
const DefaultURL = "http://127.0.0.1:8402"

const usage = `usage: claw [--url URL] [--token TOKEN] <command> [arguments]

commands:
  deploy FILE.csv [--slug S] [--price USD] [--directory D] [--plan P] [--pay-to ADDR] [--route "METHOD PATH [PRICE]"]...
  tenants
  rm SLUG
  pay URL [--key HEX] [--v1] [--agent ID]
  payments KEY
  verify
  top [--window today|week|overall] [--top N]

environment: CLAW_URL (default ` + DefaultURL + `), CLAW_TOKEN (admin token or owner API key),
             CLAW_PAY_KEY (payer key for pay; default a well-known test key)
`

// usageError is bad usage: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// cli is one invocation: where to talk and where to write.
type cli struct {
	base   string
	token  string
	env    func(string) string
	out    io.Writer
	errw   io.Writer
	client *http.Client
}

// run is the whole program; it returns the exit code.
func run(args []string, env func(string) string, stdout, stderr io.Writer) int {
	c := &cli{env: env, out: stdout, errw: stderr, client: &http.Client{Timeout: 2 * time.Minute}}
	global := flag.NewFlagSet("claw", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	urlFlag := global.String("url", "", "gateway URL (CLAW_URL)")
	tokenFlag := global.String("token", "", "admin token or owner API key (CLAW_TOKEN)")
	help := global.Bool("help", false, "show usage")
	if err := global.Parse(args); err != nil {
		fmt.Fprintf(stderr, "claw: %v\n%s", err, usage)
		return exitUsage
	}
	rest := global.Args()
	if *help || len(rest) == 0 {
		fmt.Fprint(stderr, usage)
		if *help {
			return exitOK
		}
		return exitUsage
	}
	c.base = firstNonEmpty(*urlFlag, env("CLAW_URL"), DefaultURL)
	c.base = strings.TrimRight(c.base, "/")
	c.token = firstNonEmpty(*tokenFlag, env("CLAW_TOKEN"))
	cmd, cmdArgs := rest[0], rest[1:]
	var err error
	switch cmd {
	case "deploy":
		err = c.deploy(cmdArgs)
	case "tenants", "ls":
		err = c.tenants(cmdArgs)
	case "rm":
		err = c.rm(cmdArgs)
	case "pay":
		err = c.pay(cmdArgs)
	case "payments", "payment":
		err = c.payments(cmdArgs)
	case "verify":
		err = c.verify(cmdArgs)
	case "top":
		err = c.top(cmdArgs)
	case "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		err = usagef("unknown command %q", cmd)
	}
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "claw %s: %s\n", cmd, oneLine(err.Error()))
	var ue *usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFail
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// parseInterleaved parses fs's flags wherever they stand among the
// positional arguments and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usagef("%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// apiError is a refusal of the gateway, in its JSON error shape.
type apiError struct {
	Status    int
	Code      string
	Message   string
	RequestID string
}

func (e *apiError) Error() string {
	s := fmt.Sprintf("%d %s", e.Status, e.Code)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// call sends one request to the admin API with the token and decodes a
// JSON answer into out (when not nil). A status of 400 or more is an
// *apiError.
func (c *cli) call(method, path string, body io.Reader, contentType string, out any) (int, error) {
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		return 0, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if s, ok := body.(interface{ Size() int64 }); ok {
		req.ContentLength = s.Size()
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("cannot reach the gateway at %s: %v", c.base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("reading the answer: %v", err)
	}
	if resp.StatusCode >= 400 {
		var e struct {
			Error     string `json:"error"`
			Message   string `json:"message"`
			RequestID string `json:"requestId"`
		}
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = http.StatusText(resp.StatusCode)
			e.Message = strings.TrimSpace(string(raw))
			if len(e.Message) > 200 {
				e.Message = e.Message[:200] + "..."
			}
		}
		if resp.StatusCode == http.StatusNotFound && e.Error == "not_found" && strings.Contains(e.Message, "no platform route") {
			e.Message += " (is this a 402claw gateway with the admin API mounted?)"
		}
		return resp.StatusCode, &apiError{resp.StatusCode, e.Error, e.Message, e.RequestID}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("the gateway answered %d with unexpected JSON: %v", resp.StatusCode, err)
		}
	}
	return resp.StatusCode, nil
}

func (c *cli) needToken() error {
	if c.token == "" {
		return usagef("this command needs a token: --token or CLAW_TOKEN (the admin token or an owner API key)")
	}
	return nil
}

func unwrapURLError(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// jsonBody encodes v for a request.
func jsonBody(v any) (*bytes.Reader, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(b), nil
}

func asAPIError(err error, target **apiError) bool { return errors.As(err, target) }

func jsonIndent(v any) ([]byte, error) { return json.MarshalIndent(v, "", "  ") }
