#!/usr/bin/env bash
# Builds the statically linked `trove` binary and the `trove` container image from it,
# in one step. No registry is needed: the image is FROM scratch.
#
#   ./scripts/image.sh [TAG]        # default tag: trove:latest (also trove:<version>)
#
# The binary is target/x86_64-unknown-linux-gnu/release/trove (glibc, linked with
# +crt-static); the script refuses to build an image from a binary that is not static.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${1:-trove:latest}"
TARGET=x86_64-unknown-linux-gnu
BIN="target/$TARGET/release/trove"

echo "image.sh: building the static binary ($BIN)" >&2
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target "$TARGET" -p trove-cli

# A scratch image has no libc or loader: the binary must be fully static.
desc="$(file -b "$BIN")"
case "$desc" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) echo "image.sh: $BIN is not statically linked: $desc" >&2; exit 1 ;;
esac
# ldd says "statically linked" or "not a dynamic executable"; a library ("=>") is fatal.
libs="$(ldd "$BIN" 2>&1 || true)"
if grep -q '=>' <<<"$libs"; then
    echo "image.sh: $BIN needs shared libraries:" >&2
    echo "$libs" >&2
    exit 1
fi

CTX="target/docker-context"
rm -rf "$CTX"
mkdir -p "$CTX/data" "$CTX/tmp"
chmod 1777 "$CTX/tmp"
# Debug line tables stay in the target/ binary for backtraces; the image gets a
# stripped copy.
strip --strip-debug -o "$CTX/trove" "$BIN"
cp deploy/docker/Dockerfile "$CTX/Dockerfile"

VERSION="$("$BIN" --version | awk '{print $2}')"
docker build --quiet -t "$TAG" -t "trove:$VERSION" "$CTX" >/dev/null
SIZE="$(docker image inspect -f '{{.Size}}' "$TAG")"
echo "image.sh: built $TAG (trove:$VERSION), $((SIZE / 1024 / 1024)) MiB ($SIZE bytes)" >&2
