//go:build linux

package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hitless/hitless/supervisor"
)

// MaxRequest is the longest request line the server reads, newline
// excluded.
const MaxRequest = 4096

// MaxTimeout is the longest "timeout" a request may carry.
const MaxTimeout = 24 * time.Hour

// Commands.
const (
	CmdReload = "reload"
	CmdStatus = "status"
	CmdStop   = "stop"
	// CmdPromote and CmdRollback end the trial of a reloaded generation
	// early, with success or with a rollback.
	CmdPromote  = "promote"
	CmdRollback = "rollback"
	// CmdUpgrade replaces hitless's own binary in place (see package
	// upgrade); "binary" names the new one, else the path hitless was
	// started from.
	CmdUpgrade = "upgrade"
)

// Reply codes, for clients that branch on the kind of failure.
const (
	CodeBadRequest    = "bad_request"    // the request was malformed; nothing changed
	CodeNotAuthorized = "not_authorized" // the peer is neither root nor hitless's user
	CodeBusy          = "busy"           // too many connections at once; try again
	CodeReloadFailed  = "reload_failed"  // the new generation did not take over
	CodeTimeout       = "timeout"        // no outcome within the timeout; it may still come
	CodeStopping      = "stopping"       // hitless is shutting down
	CodeNoTrial       = "no_trial"       // promote or rollback, but no generation is on trial
	CodeUpgradeFailed = "upgrade_failed" // refused, failed or rolled back: the old hitless runs on
	CodeUpgradeBusy   = "upgrade_busy"   // an upgrade to another binary is under way; ask again after it
	CodeInternal      = "internal"       // anything else
)

// Request is one command to the server, sent as one line of JSON.
type Request struct {
	Cmd string `json:"cmd"`
	// Timeout bounds the server's wait for the outcome, as a Go
	// duration ("90s"); empty means the server's default.
	Timeout string `json:"timeout,omitempty"`
	// Binary is the new binary of an upgrade; empty means the path
	// hitless was started from.
	Binary string `json:"binary,omitempty"`
}

// Reply is the server's answer, one line of JSON.
type Reply struct {
	OK    bool   `json:"ok"`
	Code  string `json:"code,omitempty"`  // set when !OK
	Error string `json:"error,omitempty"` // set when !OK
	// Reload is set in replies to reload: the new generation, and on
	// failure why it failed.
	Reload *ReloadResult `json:"reload,omitempty"`
	// Status is set in replies to status.
	Status *supervisor.Status `json:"status,omitempty"`
	// Serving is set in replies to promote and rollback: the generation
	// serving once the trial ended.
	Serving *GenRef `json:"serving,omitempty"`
	// Upgrade is set in replies to upgrade: its verdict, and on success
	// who runs now.
	Upgrade *UpgradeReply `json:"upgrade,omitempty"`
}

// UpgradeReply is the outcome of an upgrade.
type UpgradeReply struct {
	supervisor.UpgradeResult
	// On success, what runs now: the same pid, the new binary and its
	// version, and the generations it carried.
	PID         int    `json:"pid,omitempty"`
	Running     string `json:"running,omitempty"`
	Version     string `json:"version,omitempty"`
	Generations int    `json:"generations,omitempty"`
}

// ReloadResult is the outcome of a reload.
type ReloadResult struct {
	Generation int      `json:"generation,omitempty"` // the new generation (0 if unknown)
	PID        int      `json:"pid,omitempty"`
	Reason     string   `json:"reason,omitempty"` // why it failed
	Stderr     []string `json:"stderr,omitempty"` // the last lines the failed child wrote to stderr
	// RolledBack is set when the new generation was ready and served
	// beside the old one during its trial, and then failed it: the old
	// one, never signalled, serves on.
	RolledBack bool `json:"rolled_back,omitempty"`
	// Serving is the generation serving once the verdict was in: the
	// new one after a success, the old one (if any) after a failure.
	Serving *GenRef `json:"serving,omitempty"`
}

// GenRef names a generation.
type GenRef struct {
	Generation int `json:"generation"`
	PID        int `json:"pid"`
}

// request is a parsed, valid Request.
type request struct {
	cmd     string
	timeout time.Duration // 0: the server's default
	binary  string        // upgrade
	// resumed is set on a request carried across an upgrade, which this
	// image answers: for an upgrade, with the verdict of the one that
	// brought it.
	resumed bool
	// caller names a reload request to the supervisor (see Handler): a
	// carried one takes its own place back with it.
	caller supervisor.Caller
}

const validCmds = `valid commands are "reload", "status", "stop", "promote", "rollback" and "upgrade"`
const example = `want one JSON object on one line, such as {"cmd":"reload","timeout":"90s"}`

// parseRequest parses one request line (without its newline). It accepts
// exactly one JSON object with a string "cmd" naming a command and an
// optional string "timeout" holding a positive Go duration, each at most
// once, and nothing else.
func parseRequest(line []byte) (request, error) {
	var req request
	fields, err := readFields(line)
	if err != nil {
		return req, err
	}
	cmd, given := fields["cmd"]
	switch cmd {
	case CmdReload, CmdStatus, CmdStop, CmdPromote, CmdRollback, CmdUpgrade:
		req.cmd = cmd
	case "":
		if !given {
			return req, fmt.Errorf(`missing field "cmd": %s`, validCmds)
		}
		return req, fmt.Errorf(`empty "cmd": %s`, validCmds)
	default:
		return req, fmt.Errorf("unknown cmd %s: %s", quote(cmd), validCmds)
	}
	if timeout, ok := fields["timeout"]; ok {
		if req.timeout, err = parseTimeout(timeout); err != nil {
			return req, err
		}
	}
	if binary, ok := fields["binary"]; ok {
		switch {
		case req.cmd != CmdUpgrade:
			return req, fmt.Errorf(`field "binary" is for the upgrade command, not %q`, req.cmd)
		case !strings.HasPrefix(binary, "/"):
			return req, fmt.Errorf(`"binary" %s: want an absolute path`, quote(binary))
		case strings.IndexByte(binary, 0) >= 0:
			return req, errors.New(`"binary" contains a NUL byte`)
		}
		req.binary = binary
	}
	return req, nil
}

// readFields reads line as one JSON object of string fields, each of
// "cmd", "timeout" and "binary" at most once, and returns them.
func readFields(line []byte) (map[string]string, error) {
	if len(bytes.TrimSpace(line)) == 0 {
		return nil, fmt.Errorf("empty request: %s", example)
	}
	if !utf8.Valid(line) {
		return nil, fmt.Errorf("request is not valid UTF-8: %s", example)
	}
	malformed := func(err error) error { return fmt.Errorf("malformed JSON: %v: %s", jsonErr(err), example) }
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, malformed(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("request is %s, not a JSON object: %s", describe(tok), example)
	}
	fields := map[string]string{}
	for dec.More() {
		if err := readField(dec, fields); err != nil {
			return nil, err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, malformed(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("data after the JSON object: %s", example)
	}
	return fields, nil
}

// readField reads the next field of the request's object into fields.
func readField(dec *json.Decoder, fields map[string]string) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("malformed JSON: %v: %s", jsonErr(err), example)
	}
	key, _ := tok.(string) // object keys are always strings
	if key != "cmd" && key != "timeout" && key != "binary" {
		return fmt.Errorf("unknown field %s: valid fields are \"cmd\", \"timeout\" and \"binary\"", quote(key))
	}
	if _, seen := fields[key]; seen {
		return fmt.Errorf("field %q given twice", key)
	}
	var v any
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("malformed JSON: %v: %s", jsonErr(err), example)
	}
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("field %q is %s: want a string", key, describe(v))
	}
	fields[key] = s
	return nil
}

// parseTimeout parses a request's "timeout".
func parseTimeout(timeout string) (time.Duration, error) {
	d, err := time.ParseDuration(timeout)
	switch {
	case err != nil:
		return 0, fmt.Errorf(`"timeout" %s is not a duration: want a Go duration such as "90s" or "2m"`, quote(timeout))
	case d <= 0:
		return 0, fmt.Errorf(`"timeout" %s: want a positive duration such as "90s"`, quote(timeout))
	case d > MaxTimeout:
		return 0, fmt.Errorf(`"timeout" %s: want at most %v`, quote(timeout), MaxTimeout)
	}
	return d, nil
}

// jsonErr drops the "json: " prefix some decoder errors carry.
func jsonErr(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "unexpected end of line"
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// describe names the JSON type of a token or decoded value.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case string:
		return "a string"
	case json.Delim:
		if v == '[' {
			return "an array"
		}
		return "an object"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// quote quotes s for an error message, cut to a readable length: the
// request may be anything.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}
