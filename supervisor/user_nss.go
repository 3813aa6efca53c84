//go:build linux && (!cgo || osusergo)

package supervisor

// nssNote is what a failed name lookup adds: a static build (the
// default, CGO_ENABLED=0) reads /etc/passwd and /etc/group only.
const nssNote = " in /etc/passwd and /etc/group (this build of hitless is static and does not ask NSS: for users only LDAP or SSSD know, give numbers, or build hitless with cgo)"
