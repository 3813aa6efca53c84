package pidfile_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/hitless/hitless/internal/pidfile"
)

func Example() {
	dir, err := os.MkdirTemp("", "pidfile-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "hitless.pid")

	// At start-up, before telling systemd anything about our pid.
	if err := pidfile.Write(path, 4242); err != nil {
		log.Fatal(err)
	}
	// On the way out.
	defer pidfile.Remove(path)

	pid, err := pidfile.Read(path)
	fmt.Println(pid, err)
	// Output: 4242 <nil>
}
