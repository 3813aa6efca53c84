//go:build linux

package upgrade_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"syscall"

	"github.com/hitless/hitless/upgrade"
)

// A program that upgrades itself: its main answers the check mode,
// records its image before anything else, and takes back what an earlier
// image handed over. Later, on request, it checks the new binary, names
// what to carry, and execs it.
func Example() {
	if len(os.Args) > 1 && os.Args[1] == upgrade.CheckArg {
		os.Exit(upgrade.RunCheck("v1.4.0"))
	}
	self, err := upgrade.Open()
	if err != nil {
		log.Fatal(err)
	}
	st, err := upgrade.Inherited()
	if err != nil {
		log.Fatal(err)
	}
	var ln *os.File
	if st != nil { // started by an upgrade: take the listener back
		ln = st.File("listener")
		st.Commit()
	}
	_ = ln // ... serve on ln, or bind it when st is nil ...

	// On request, from the main thread:
	start := func(argv0 string, argv []string, attr *syscall.ProcAttr) (int, <-chan syscall.WaitStatus, error) {
		pid, err := syscall.ForkExec(argv0, argv, attr)
		exited := make(chan syscall.WaitStatus, 1)
		go func() {
			var ws syscall.WaitStatus
			syscall.Wait4(pid, &ws, 0, nil)
			exited <- ws
		}()
		return pid, exited, err
	}
	bin, err := self.Check(context.Background(), self.Path, start)
	if err != nil {
		log.Printf("new binary refused: %v", err) // nothing changed
		return
	}
	next := upgrade.NewState(1, "v1.4.0")
	if err := next.CarryConn("listener", ln); err != nil {
		log.Fatal(err)
	}
	log.Print(self.Exec(bin, next, nil)) // returns only if the exec failed
}

// The state the next image inherits, seen in this process: named
// sections, and named descriptors.
func ExampleLoopback() {
	st := upgrade.NewState(1, "v1.4.0")
	st.Put("supervisor", map[string]int{"serving": 3})
	next, err := upgrade.Loopback(st)
	if err != nil {
		log.Fatal(err)
	}
	var v map[string]int
	next.Get("supervisor", &v)
	fmt.Println(next.ID, next.From, v["serving"])
	// Output: 1 v1.4.0 3
}
