//go:build linux

package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/hitless/hitless/supervisor"
	"github.com/hitless/hitless/supervisor/sockets"
)

// --fdstore over the file's fdstore:, --listen systemd://NAME over its
// sockets; hitless status says where each socket came from.
func TestConfigureSystemd(t *testing.T) {
	f, err := configure(t, "fdstore: false\nlisten: [tcp://127.0.0.1:8080]\ncommand: [./server]\n", "--fdstore", "--listen", "systemd://web")
	if err != nil {
		t.Fatal(err)
	}
	if !f.FDStore || len(f.Listen) != 1 || f.Listen[0].Systemd != "web" {
		t.Errorf("fdstore %v, listen %v; want true, [systemd://web]", f.FDStore, f.Listen)
	}
	if _, err := configure(t, "", "--listen", "systemd://web?backlog=5", "--", "./server"); err == nil || !strings.Contains(err.Error(), "--listen") || !strings.Contains(err.Error(), "no options") {
		t.Errorf("an option on systemd://: %v", err)
	}

	var out bytes.Buffer
	printStatus(&out, "/run/c.sock", supervisor.Status{PID: 1, Listeners: []supervisor.ListenerStatus{
		{Name: "web", Network: "tcp", Address: "127.0.0.1:8080", FD: 3, Source: sockets.SourceSystemd},
		{Name: "api", Network: "unix", Address: "/run/api.sock", FD: 4, Source: sockets.SourceStore},
	}}, time.Now())
	for _, want := range []string{"socket web: tcp 127.0.0.1:8080 (fd 3, systemd)\n", "socket api: unix /run/api.sock (fd 4, store)\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status:\n%s\nlacks %q", out.String(), want)
		}
	}
}
