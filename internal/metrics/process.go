//go:build linux

package metrics

import (
	"os"
	"runtime"
	"runtime/debug"
	rm "runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The go_* and process_* families of the hitless process, with the names,
// types, HELP texts and sources of the Prometheus Go client's default Go
// and process collectors (client_golang v1.25), which served them before:
// dashboards built on those keep working.

// goFamilies reads the Go runtime's figures.
func goFamilies() []family {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	var gc debug.GCStats
	gc.PauseQuantiles = make([]time.Duration, 5)
	debug.ReadGCStats(&gc)
	threads, _ := runtime.ThreadCreateProfile(nil)

	samples := []rm.Sample{{Name: "/gc/gogc:percent"}, {Name: "/gc/gomemlimit:bytes"}, {Name: "/sched/gomaxprocs:threads"}}
	rm.Read(samples)
	sampled := func(i int) float64 {
		if samples[i].Value.Kind() == rm.KindUint64 {
			return float64(samples[i].Value.Uint64())
		}
		return 0
	}

	summary := family{name: "go_gc_duration_seconds", typ: "summary",
		help: "A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles."}
	for i, q := range []string{"0", "0.25", "0.5", "0.75", "1"} {
		summary.samples = append(summary.samples, sample{labels: []string{"quantile", q}, value: gc.PauseQuantiles[i].Seconds()})
	}
	summary.samples = append(summary.samples,
		sample{suffix: "_sum", value: gc.PauseTotal.Seconds()},
		sample{suffix: "_count", value: float64(gc.NumGC)})

	fams := []family{
		summary,
		one("go_gc_gogc_percent", "gauge", "Heap size target percentage configured by the user, otherwise 100. This value is set by the GOGC environment variable, and the runtime/debug.SetGCPercent function. Sourced from /gc/gogc:percent.", sampled(0)),
		one("go_gc_gomemlimit_bytes", "gauge", "Go runtime memory limit configured by the user, otherwise math.MaxInt64. This value is set by the GOMEMLIMIT environment variable, and the runtime/debug.SetMemoryLimit function. Sourced from /gc/gomemlimit:bytes.", sampled(1)),
		one("go_sched_gomaxprocs_threads", "gauge", "The current runtime.GOMAXPROCS setting, or the number of operating system threads that can execute user-level Go code simultaneously. Sourced from /sched/gomaxprocs:threads.", sampled(2)),
		one("go_goroutines", "gauge", "Number of goroutines that currently exist.", float64(runtime.NumGoroutine())),
		one("go_threads", "gauge", "Number of OS threads created.", float64(threads)),
		one("go_memstats_last_gc_time_seconds", "gauge", "Number of seconds since 1970 of last garbage collection.", float64(gc.LastGC.UnixNano())/1e9),
	}
	info := family{name: "go_info", typ: "gauge", help: "Information about the Go environment."}
	info.add(1, "version", runtime.Version())
	fams = append(fams, info)
	for _, m := range memStats {
		fams = append(fams, one("go_memstats_"+m.name, m.typ, m.help, m.value(&ms)))
	}
	return fams
}

// memStats are the go_memstats_* families but the time of the last GC.
var memStats = []struct {
	name, typ, help string
	value           func(*runtime.MemStats) float64
}{
	{"alloc_bytes", "gauge", "Number of bytes allocated in heap and currently in use. Equals to /memory/classes/heap/objects:bytes.", func(m *runtime.MemStats) float64 { return float64(m.Alloc) }},
	{"alloc_bytes_total", "counter", "Total number of bytes allocated in heap until now, even if released already. Equals to /gc/heap/allocs:bytes.", func(m *runtime.MemStats) float64 { return float64(m.TotalAlloc) }},
	{"buck_hash_sys_bytes", "gauge", "Number of bytes used by the profiling bucket hash table. Equals to /memory/classes/profiling/buckets:bytes.", func(m *runtime.MemStats) float64 { return float64(m.BuckHashSys) }},
	{"frees_total", "counter", "Total number of heap objects frees. Equals to /gc/heap/frees:objects + /gc/heap/tiny/allocs:objects.", func(m *runtime.MemStats) float64 { return float64(m.Frees) }},
	{"gc_sys_bytes", "gauge", "Number of bytes used for garbage collection system metadata. Equals to /memory/classes/metadata/other:bytes.", func(m *runtime.MemStats) float64 { return float64(m.GCSys) }},
	{"heap_alloc_bytes", "gauge", "Number of heap bytes allocated and currently in use, same as go_memstats_alloc_bytes. Equals to /memory/classes/heap/objects:bytes.", func(m *runtime.MemStats) float64 { return float64(m.HeapAlloc) }},
	{"heap_idle_bytes", "gauge", "Number of heap bytes waiting to be used. Equals to /memory/classes/heap/released:bytes + /memory/classes/heap/free:bytes.", func(m *runtime.MemStats) float64 { return float64(m.HeapIdle) }},
	{"heap_inuse_bytes", "gauge", "Number of heap bytes that are in use. Equals to /memory/classes/heap/objects:bytes + /memory/classes/heap/unused:bytes", func(m *runtime.MemStats) float64 { return float64(m.HeapInuse) }},
	{"heap_objects", "gauge", "Number of currently allocated objects. Equals to /gc/heap/objects:objects.", func(m *runtime.MemStats) float64 { return float64(m.HeapObjects) }},
	{"heap_released_bytes", "gauge", "Number of heap bytes released to OS. Equals to /memory/classes/heap/released:bytes.", func(m *runtime.MemStats) float64 { return float64(m.HeapReleased) }},
	{"heap_sys_bytes", "gauge", "Number of heap bytes obtained from system. Equals to /memory/classes/heap/objects:bytes + /memory/classes/heap/unused:bytes + /memory/classes/heap/released:bytes + /memory/classes/heap/free:bytes.", func(m *runtime.MemStats) float64 { return float64(m.HeapSys) }},
	{"mallocs_total", "counter", "Total number of heap objects allocated, both live and gc-ed. Semantically a counter version for go_memstats_heap_objects gauge. Equals to /gc/heap/allocs:objects + /gc/heap/tiny/allocs:objects.", func(m *runtime.MemStats) float64 { return float64(m.Mallocs) }},
	{"mcache_inuse_bytes", "gauge", "Number of bytes in use by mcache structures. Equals to /memory/classes/metadata/mcache/inuse:bytes.", func(m *runtime.MemStats) float64 { return float64(m.MCacheInuse) }},
	{"mcache_sys_bytes", "gauge", "Number of bytes used for mcache structures obtained from system. Equals to /memory/classes/metadata/mcache/inuse:bytes + /memory/classes/metadata/mcache/free:bytes.", func(m *runtime.MemStats) float64 { return float64(m.MCacheSys) }},
	{"mspan_inuse_bytes", "gauge", "Number of bytes in use by mspan structures. Equals to /memory/classes/metadata/mspan/inuse:bytes.", func(m *runtime.MemStats) float64 { return float64(m.MSpanInuse) }},
	{"mspan_sys_bytes", "gauge", "Number of bytes used for mspan structures obtained from system. Equals to /memory/classes/metadata/mspan/inuse:bytes + /memory/classes/metadata/mspan/free:bytes.", func(m *runtime.MemStats) float64 { return float64(m.MSpanSys) }},
	{"next_gc_bytes", "gauge", "Number of heap bytes when next garbage collection will take place. Equals to /gc/heap/goal:bytes.", func(m *runtime.MemStats) float64 { return float64(m.NextGC) }},
	{"other_sys_bytes", "gauge", "Number of bytes used for other system allocations. Equals to /memory/classes/other:bytes.", func(m *runtime.MemStats) float64 { return float64(m.OtherSys) }},
	{"stack_inuse_bytes", "gauge", "Number of bytes obtained from system for stack allocator in non-CGO environments. Equals to /memory/classes/heap/stacks:bytes.", func(m *runtime.MemStats) float64 { return float64(m.StackInuse) }},
	{"stack_sys_bytes", "gauge", "Number of bytes obtained from system for stack allocator. Equals to /memory/classes/heap/stacks:bytes + /memory/classes/os-stacks:bytes.", func(m *runtime.MemStats) float64 { return float64(m.StackSys) }},
	{"sys_bytes", "gauge", "Number of bytes obtained from system. Equals to /memory/classes/total:byte.", func(m *runtime.MemStats) float64 { return float64(m.Sys) }},
}

// one is a family of one sample without labels.
func one(name, typ, help string, v float64) family {
	return family{name: name, typ: typ, help: help, samples: []sample{{value: v}}}
}

// userHZ is the unit of the CPU times in /proc/PID/stat, fixed on Linux
// whatever the kernel's own tick.
const userHZ = 100

// processFamilies reads the process_* figures of this process from /proc
// and its resource limits. A figure that cannot be read is left out.
func processFamilies() []family {
	var fams []family
	if st, err := os.ReadFile("/proc/self/stat"); err == nil {
		// Fields after the command name, which may hold spaces and
		// parentheses: state is the first; utime, stime, starttime,
		// vsize and rss are the 12th, 13th, 20th, 21st and 22nd.
		f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		num := func(i int) float64 {
			if i >= len(f) {
				return 0
			}
			v, _ := strconv.ParseFloat(f[i], 64)
			return v
		}
		fams = append(fams,
			one("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", (num(11)+num(12))/userHZ),
			one("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", num(20)),
			one("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", num(21)*float64(os.Getpagesize())))
		if boot, ok := bootTime(); ok {
			fams = append(fams, one("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", boot+num(19)/userHZ))
		}
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		fams = append(fams, one("process_open_fds", "gauge", "Number of open file descriptors.", float64(len(fds))))
	}
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil {
		fams = append(fams, one("process_max_fds", "gauge", "Maximum number of open file descriptors.", float64(l.Cur)))
	}
	if syscall.Getrlimit(syscall.RLIMIT_AS, &l) == nil {
		fams = append(fams, one("process_virtual_memory_max_bytes", "gauge", "Maximum amount of virtual memory available in bytes.", float64(l.Cur)))
	}
	// The IP octets of the process's network namespace (/proc/self/net/
	// netstat), as the Go client counts them.
	in, out := netOctets()
	fams = append(fams,
		one("process_network_receive_bytes_total", "counter", "Number of bytes received by the process over the network.", in),
		one("process_network_transmit_bytes_total", "counter", "Number of bytes sent by the process over the network.", out))
	return fams
}

// bootTime is the "btime" of /proc/stat: when the system booted, in
// seconds since the Unix epoch.
func bootTime() (float64, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			t, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return t, err == nil
		}
	}
	return 0, false
}

// netOctets reads InOctets and OutOctets of the IpExt lines of
// /proc/self/net/netstat: a line of names, then a line of values.
func netOctets() (in, out float64) {
	b, err := os.ReadFile("/proc/self/net/netstat")
	if err != nil {
		return 0, 0
	}
	var names []string
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "IpExt:")
		if !ok {
			continue
		}
		if names == nil {
			names = strings.Fields(rest)
			continue
		}
		for i, v := range strings.Fields(rest) {
			if i < len(names) {
				switch names[i] {
				case "InOctets":
					in, _ = strconv.ParseFloat(v, 64)
				case "OutOctets":
					out, _ = strconv.ParseFloat(v, 64)
				}
			}
		}
		break
	}
	return in, out
}
