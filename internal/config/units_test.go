//go:build linux

package config

import (
	"bufio"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// readUnit reads a systemd unit file of configs/ into its sections' keys
// and values, in order (a key may be given more than once).
func readUnit(t *testing.T, name string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open("../../configs/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unit := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			unit[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: %q is neither a section nor KEY=VALUE in one", name, n, line)
			}
			unit[section][k] = append(unit[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return unit
}

// The shipped units keep the sockets in systemd's hands: every service
// lets hitless notify and store as many sockets as hitless.yaml lists,
// across a stop too; the socket unit passes, under the name its service's
// --listen systemd://NAME asks for, listening sockets, in blocking mode.
func TestShippedUnits(t *testing.T) {
	data, err := os.ReadFile("../../configs/hitless.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Listen []any }
	if err := yaml.Unmarshal(data, &doc); err != nil || len(doc.Listen) == 0 {
		t.Fatalf("hitless.yaml: %d listen items, %v", len(doc.Listen), err)
	}
	one := func(unit map[string]map[string][]string, section, key string) string {
		v := unit[section][key]
		if len(v) != 1 {
			return strings.Join(v, "|")
		}
		return v[0]
	}
	for _, name := range []string{"hitless-notify.service", "hitless-notify-reload.service", "hitless-socket.service"} {
		u := readUnit(t, name)
		if v := one(u, "Service", "NotifyAccess"); v != "main" {
			t.Errorf("%s: NotifyAccess=%s, want main: hitless notifies and stores sockets", name, v)
		}
		if n, err := strconv.Atoi(one(u, "Service", "FileDescriptorStoreMax")); err != nil || n < len(doc.Listen) {
			t.Errorf("%s: FileDescriptorStoreMax=%s, want at least the %d sockets of hitless.yaml", name, one(u, "Service", "FileDescriptorStoreMax"), len(doc.Listen))
		}
		if v := one(u, "Service", "FileDescriptorStorePreserve"); v != "yes" {
			t.Errorf("%s: FileDescriptorStorePreserve=%s, want yes", name, v)
		}
	}

	sock := readUnit(t, "hitless.socket")
	fdname := one(sock, "Socket", "FileDescriptorName")
	if len(sock["Socket"]["ListenStream"]) == 0 || fdname == "" {
		t.Errorf("hitless.socket: ListenStream=%q FileDescriptorName=%q, want both", sock["Socket"]["ListenStream"], fdname)
	}
	if v := one(sock, "Socket", "Accept"); v != "no" && v != "" {
		t.Errorf("hitless.socket: Accept=%s: hitless takes listening sockets", v)
	}
	if v := one(sock, "Socket", "Service"); v != "hitless-socket.service" {
		t.Errorf("hitless.socket: Service=%s, want hitless-socket.service", v)
	}
	svc := readUnit(t, "hitless-socket.service")
	if v := one(svc, "Service", "ExecStart"); !strings.Contains(v, "--listen systemd://"+fdname) {
		t.Errorf("hitless-socket.service: ExecStart=%s does not take systemd://%s", v, fdname)
	}
	for _, key := range []string{"Requires", "After"} {
		if v := one(svc, "Unit", key); !slices.Contains(strings.Fields(v), "hitless.socket") {
			t.Errorf("hitless-socket.service: %s=%s, want hitless.socket in it", key, v)
		}
	}
	if v := one(svc, "Service", "Type"); v != "notify" {
		t.Errorf("hitless-socket.service: Type=%s, want notify", v)
	}
	if v := one(svc, "Service", "NonBlocking"); v != "no" && v != "" {
		t.Errorf("hitless-socket.service: NonBlocking=%s: blocking servers need blocking sockets", v)
	}
}
