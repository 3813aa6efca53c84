// Package deploytest tests scripts/deploy.sh and the Ansible playbook
// configs/ansible/rolling-deploy.yml from Go, so that "go test" covers
// them with the rest of the tree.
//
// The tests run the real script with bash against a fake hitless (a shell
// script named by $HITLESS that records its arguments and exits with a
// chosen status), and check the release directories and the "current"
// symlink after a successful and a failed reload. They need bash and GNU
// coreutils and findutils (mv -T, readlink -f, find -printf), as the
// script does.
//
// The playbook's test runs ansible-playbook (Debian: ansible-core; the
// test skips without it) against four real hitless instances on this
// machine, one per "host" of a local-connection inventory, each serving
// the test server through its own release symlink, and rolls out a
// release that one host cannot start. The package has no code of its
// own.
package deploytest
