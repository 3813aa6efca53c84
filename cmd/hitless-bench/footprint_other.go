//go:build !linux

package main

import "errors"

// helpersOf needs Linux, as hitless does.
func helpersOf(int) (int, int, error) { return 0, 0, errors.New("hitless runs on Linux only") }
