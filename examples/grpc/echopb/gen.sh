#!/bin/sh
# Regenerates echo.pb.go and echo_grpc.pb.go from echo.proto (go generate
# runs it). Needs protoc (Debian: protobuf-compiler); the two plugins are
# built at the versions the generated files name, in a directory of their
# own that is removed afterwards.
set -eu
cd "$(dirname "$0")"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN=$bin go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
GOBIN=$bin go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.0
PATH=$bin:$PATH protoc --go_out=. --go_opt=paths=source_relative \
	--go-grpc_out=. --go-grpc_opt=paths=source_relative echo.proto
