//go:build !linux

package main

import "errors"

// watcherOf needs Linux, as hitless does.
func watcherOf(int) (int, error) { return 0, errors.New("hitless runs on Linux only") }
