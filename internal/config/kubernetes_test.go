package config

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The Kubernetes Deployment of configs/kubernetes gives each pod more
// time than it needs to drain: terminationGracePeriodSeconds above the
// preStop sleep plus the --drain-timeout of hitless in the image's
// entrypoint (configs/Containerfile), which is above the app's own. The
// probes use the gRPC port the entrypoint listens on.
func TestShippedKubernetes(t *testing.T) {
	data, err := os.ReadFile("../../configs/kubernetes/deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Spec struct {
			Template struct {
				Spec struct {
					Grace      int `yaml:"terminationGracePeriodSeconds"`
					Containers []struct {
						Ports []struct {
							Port int `yaml:"containerPort"`
						}
						Readiness struct{ GRPC struct{ Port int } } `yaml:"readinessProbe"`
						Lifecycle struct {
							PreStop struct{ Sleep struct{ Seconds int } } `yaml:"preStop"`
						}
					}
				}
			}
		}
	}
	if err := yaml.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 || len(pod.Containers[0].Ports) != 1 {
		t.Fatalf("want one container with one port: %+v", pod)
	}
	c := pod.Containers[0]

	// The image's ENTRYPOINT and CMD, in exec form (JSON arrays).
	file, err := os.ReadFile("../../configs/Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	var entrypoint, cmd []string
	for line := range strings.SplitSeq(string(file), "\n") {
		for key, into := range map[string]*[]string{"ENTRYPOINT ": &entrypoint, "CMD ": &cmd} {
			if v, ok := strings.CutPrefix(line, key); ok {
				if err := json.Unmarshal([]byte(v), into); err != nil {
					t.Fatalf("Containerfile: %s is not in exec form: %v", key, err)
				}
			}
		}
	}
	flagValue := func(argv []string, flag string) string {
		i := slices.Index(argv, flag)
		if i < 0 || i+1 >= len(argv) {
			t.Fatalf("Containerfile: %q lacks %s", argv, flag)
		}
		return argv[i+1]
	}
	duration := func(s string) time.Duration {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	hitlessDrain := duration(flagValue(entrypoint, "--drain-timeout"))
	appDrain := duration(flagValue(cmd, "-drain-timeout"))
	grace := time.Duration(pod.Grace) * time.Second
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	if grace <= preStop+hitlessDrain {
		t.Errorf("terminationGracePeriodSeconds %v is not above preStop %v + hitless's --drain-timeout %v", grace, preStop, hitlessDrain)
	}
	if appDrain >= hitlessDrain {
		t.Errorf("the app's -drain-timeout %v is not below hitless's %v", appDrain, hitlessDrain)
	}
	if listen := flagValue(entrypoint, "--listen"); !strings.HasSuffix(listen, ":50051") || c.Ports[0].Port != 50051 || c.Readiness.GRPC.Port != 50051 {
		t.Errorf("ports: hitless --listen %s, containerPort %d, readiness probe %d", listen, c.Ports[0].Port, c.Readiness.GRPC.Port)
	}
}
