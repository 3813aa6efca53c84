// Package deploytest tests scripts/deploy.sh from Go, so that "go test"
// covers the deploy script with the rest of the tree.
//
// The tests run the real script with bash against a fake hitless (a shell
// script named by $HITLESS that records its arguments and exits with a
// chosen status), and check the release directories and the "current"
// symlink after a successful and a failed reload. They need bash and GNU
// coreutils and findutils (mv -T, readlink -f, find -printf), as the
// script does. The package has no code of its own.
package deploytest
