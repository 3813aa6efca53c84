//go:build linux

// Package config reads the YAML configuration file of "hitless run".
//
// A file holds the same settings as the flags of "hitless run", and the
// flags override it. The intended use is:
//
//	f := config.Default()          // no file: built-in defaults
//	f, err := config.Load(path)    // or: defaults overlaid with the file
//	... apply the flags the user set explicitly ...
//	err = f.Validate()             // check the merged result
//
// Flags and file share one code path for every value that needs parsing:
// ParseSignal, ParseReady, ParseDuration, ParseLogFormat and ParseLogLevel
// are what the file decoder uses, and the CLI uses them for flags.
//
// # Errors
//
// Every problem is reported with the file, the line and the field, and says
// what would be valid:
//
//	hitless.yaml:7: drain_timeout: "3x" is not a duration (want e.g. 30s, 1m30s)
//
// Unknown keys, duplicate keys, values of the wrong type and values outside
// their enumeration are all rejected; Parse reports every problem it finds
// (up to a limit) rather than only the first, as errors.Join of *Error.
//
// # Listen entries
//
// Listen addresses are not validated here beyond their shape: a listen item
// is either a string in the syntax of the --listen flag ("[NAME=]URL") or a
// mapping {name, url, backlog, mode, owner, group}, and File.Listen holds
// both forms as flag-syntax strings so that the CLI feeds them to the same
// URL parser as the flag. File.ErrorAt turns an error from that parser into
// one that points at the item's line.
//
// # Limits
//
// One YAML document per file, at most 1 MiB. Anchors and aliases work;
// merge keys (<<) do not. Relative paths (dir, control, pid_file) are kept
// as written, that is relative to the working directory of hitless, not to
// the file.
package config
