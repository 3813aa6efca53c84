//go:build linux

// Package config reads the YAML configuration file of "hitless run".
//
// A file holds the same settings as the flags of "hitless run", and the
// flags override it. A File is the supervisor's own Config (embedded)
// plus what only the command uses (log format and level, service name,
// control socket, pid file); the decoder writes each value straight into
// its field, so what the supervisor runs is what the file said, with no
// second struct to copy into. The intended use is:
//
//	f := config.Default()          // no file: the supervisor's defaults
//	f, err := config.Load(path)    // or: defaults overlaid with the file
//	f.Lay(flags, given)            // the flags given, over the file
//	err = f.Validate()             // the supervisor's rules, on the result
//	sup, err := supervisor.New(f.Config)
//
// # One rule, one place
//
// Settings is the table of every setting: its flag, its key, the
// supervisor's field it sets, its parser and its help. The flags of
// "hitless run" (each a Value), the decoder, the message about an unknown
// key, the key of a field the supervisor refused (File.Lookup) and the
// settings two files differ in (Differ) are all built from it, so a flag
// and the file accept the same text and say the same about text they
// refuse. Where the supervisor owns a rule, the table's parser is its
// own: package sockets' for a socket (ParseListen, CheckName), package
// supervisor's for the rest (LookupUser, CheckEnv, CheckDrainSignal); the
// rules across fields (a delay shorter than the
// ready timeout, backoff_min not above backoff_max, no two sockets of
// one name) are supervisor.Config.Validate's. To add a setting, add a
// row.
//
// # Errors
//
// Every problem is reported with the file, the line and the key, and says
// what would be valid:
//
//	hitless.yaml:7: drain_timeout: "3x" is not a duration (want e.g. 30s, 1m30s)
//
// Unknown keys, duplicate keys, values of the wrong type and values outside
// their enumeration are all rejected; Parse reports every problem it finds
// (up to a limit) rather than only the first, as errors.Join of *Error. A
// problem that Config.Validate finds names the key of the field (DrainTimeout
// is drain_timeout, BackoffMax is restart.backoff_max, Listen[1] is
// listen[1], Env[0] is env.NAME) and the line that set it, or no line when
// the file left the value at its default; the *Error wraps the
// *supervisor.ConfigError.
//
// Parse does not require command or listen, which may come from the
// command line; Validate does.
//
// # Listen items
//
// A listen item is either a string in the syntax of the --listen flag
// ("[NAME=]URL") or a mapping {name, url, backlog, mode, owner, group}.
// Both become a sockets.ListenSpec as they are read, so a bad address,
// option or name is reported at its line. An option may be set in the url's
// query or in the mapping, not both. owner and group are looked up in the
// user and group databases of the machine that reads the file. The url
// systemd://NAME is the socket systemd passed under that name, and takes
// no options.
//
// # Limits
//
// One YAML document per file, at most 1 MiB. Anchors and aliases work;
// merge keys (<<) do not. Relative paths (dir, control, pid_file, unix
// socket paths) are kept as written, that is relative to the working
// directory of hitless, not to the file. Env keeps the order of the file.
package config
