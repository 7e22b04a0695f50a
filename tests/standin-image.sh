#!/usr/bin/env bash
# Builds a stand-in for the Lambda base image `sam local` runs functions in, for machines that
# cannot pull from public.ecr.aws: a minimal Debian with CA certificates (rustls reads the native
# roots at start, even for a plain-http endpoint), imported under the exact tag SAM CLI looks up
# for `provided.al2023` (samcli/local/docker/lambda_image.py). SAM then builds its "rapid" image
# on top, adding the runtime interface emulator from its own pip package. Pass --skip-pull-image
# to `sam local` so it uses this image instead of asking the registry.
#
# The real image is Amazon Linux 2023 (glibc 2.34); this one is Debian 12 (glibc 2.36), so it
# also runs binaries built directly on Debian. Idempotent: does nothing when the tag exists.
set -euo pipefail

arch=${1:-x86_64}
tag="public.ecr.aws/lambda/provided:al2023-${arch}"
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "stand-in image $tag already present"
    exit 0
fi
case "$arch" in
    x86_64) debian_arch=amd64 ;;
    arm64) debian_arch=arm64 ;;
    *) echo "error: unknown architecture $arch (x86_64 or arm64)" >&2; exit 2 ;;
esac

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
echo "== debootstrap bookworm ($debian_arch) into $root (about a minute)"
debootstrap --variant=minbase --arch="$debian_arch" --include=ca-certificates \
    bookworm "$root" "$mirror" >/dev/null
mkdir -p "$root/var/task" "$root/var/runtime" "$root/opt"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import \
    --change 'WORKDIR /var/task' \
    --change 'ENV LAMBDA_TASK_ROOT=/var/task LAMBDA_RUNTIME_DIR=/var/runtime' \
    - "$tag"
echo "== stand-in image $tag imported"
