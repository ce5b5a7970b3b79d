#!/usr/bin/env bash
# Builds the spindle container image from the Dockerfile without a Docker daemon, then checks
# that the binary runs inside it. Run by `make image`, as root.
#
#   IMAGE=localhost/spindle:dev   the tag to build
#   BASE=localhost/debian:12      the base image; made here with debootstrap when missing,
#                                 because a machine without internet cannot pull docker.io
#   MIRROR=http://...             the Debian mirror for debootstrap (default: this machine's)
#
# buildah runs with chroot isolation: no daemon, no user namespaces, no container runtime.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/spindle:dev}
BASE=${BASE:-localhost/debian:12}

# The mirror apt on this machine uses, so the base image installs from the same place.
default_mirror() {
	local uri
	uri=$(sed -n 's/^URIs:[[:space:]]*\(\S*\/debian\)\/*$/\1/p' \
		/etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
	[ -n "$uri" ] || uri=$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ { print $2; exit }' \
		/etc/apt/sources.list 2>/dev/null)
	echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR=${MIRROR:-$(default_mirror)}

ctr=""
cleanup() { [ -z "$ctr" ] || buildah rm "$ctr" >/dev/null 2>&1 || true; }
trap cleanup EXIT

t0=$(date +%s)

if ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
	echo "== base image $BASE: debootstrap bookworm from $MIRROR"
	ctr=$(buildah from scratch)
	root=$(buildah mount "$ctr")
	debootstrap --variant=minbase bookworm "$root" "$MIRROR"
	# The same suites as a debian:12 image: updates and security fixes too.
	rm -f "$root/etc/apt/sources.list"
	cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR}-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
	chroot "$root" apt-get clean
	rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log
	buildah umount "$ctr" >/dev/null
	buildah config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
	buildah commit --quiet --rm "$ctr" "$BASE" >/dev/null
	ctr=""
	echo "base image built in $(($(date +%s) - t0)) s"
fi

echo "== image $IMAGE from $BASE"
t1=$(date +%s)
buildah build --isolation chroot --network host --layers \
	--build-arg BASE="$BASE" --tag "$IMAGE" --file Dockerfile .
echo "image built in $(($(date +%s) - t1)) s"

echo "== checks inside $IMAGE"
ctr=$(buildah from --quiet "$IMAGE")
buildah run --isolation chroot "$ctr" -- spindle --version
# The shipped example expands ${NODE_IP}, which the DaemonSet sets from status.hostIP.
buildah run --isolation chroot --env NODE_IP=198.18.0.1 "$ctr" -- \
	spindle --check-config /etc/spindle/spindle.yaml
echo "check-config: ok"
buildah images --format 'image {{.Name}}:{{.Tag}} {{.Size}}' "$IMAGE"
echo "total $(($(date +%s) - t0)) s"
