//go:build linux && cgo && !osusergo

package supervisor

// nssNote is what a failed name lookup adds: nothing, this build asks
// NSS (os/user through the C library), LDAP and SSSD included.
const nssNote = ""
