#!/usr/bin/env bash
# Builds the tagcount image from a static binary built here, as release
# tools do: no base image is pulled (the Containerfile starts FROM scratch),
# so this works on a machine that cannot reach a registry.
#
#   deploy/build-image.sh                 # tags tagcount:<version>
#   IMAGE=registry.example/tagcount:v1.2.3 VERSION=v1.2.3 deploy/build-image.sh
#
# Environment: IMAGE (the tag), VERSION, COMMIT, BUILT (stamped into the
# binary and the image's labels; default from git and the clock), PODMAN
# (the podman command, e.g. "podman --root /tmp/store" for a private image
# store), CA_BUNDLE (the CA certificates to ship; default the build host's).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
COMMIT=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
BUILT=${BUILT:-$(date -u +%Y-%m-%dT%H:%M:%SZ)}
IMAGE=${IMAGE:-tagcount:$VERSION}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
read -r -a podman <<<"${PODMAN:-podman}"

[ -s "$CA_BUNDLE" ] || { echo "build-image: no CA bundle at $CA_BUNDLE (apt-get install ca-certificates)" >&2; exit 1; }
command -v "${podman[0]}" >/dev/null || { echo "build-image: ${podman[0]} is not installed (apt-get install podman)" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

# Static (no cgo: the image has no libc), reproducible paths, stamped.
CGO_ENABLED=0 go build -trimpath \
  -ldflags "-s -w -X main.version=$VERSION -X main.commit=$COMMIT -X main.built=$BUILT" \
  -o "$ctx/tagcount" ./cmd/tagcount
cp "$CA_BUNDLE" "$ctx/ca-certificates.crt"
cp deploy/Containerfile "$ctx/Containerfile"

"${podman[@]}" build --file "$ctx/Containerfile" --tag "$IMAGE" \
  --build-arg "VERSION=$VERSION" --build-arg "COMMIT=$COMMIT" --build-arg "BUILT=$BUILT" "$ctx"
echo "built $IMAGE ($VERSION, $COMMIT, $BUILT)"
