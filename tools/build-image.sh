#!/usr/bin/env bash
# Builds the spindle container image from the Dockerfile without a Docker daemon, checks that
# the binary runs inside it and reports its version, and writes it as an OCI archive that
# skopeo, podman and containerd load. Run by `make image`, as root.
#
#   VERSION, REVISION             what the image's spindle reports and its labels say; by
#                                 default what `make` embeds (`make print-version`)
#   IMAGE=localhost/spindle:dev   the tag to build; it is also tagged localhost/spindle:VERSION
#   ARCHIVE=build/spindle-oci.tar the OCI archive written
#   SOURCE_URL=https://...        org.opencontainers.image.source; default: the origin remote
#   BASE=localhost/debian:12      the base image; made here with debootstrap when missing,
#                                 because a machine without internet cannot pull docker.io
#   MIRROR=http://...             the Debian mirror for debootstrap (default: this machine's)
#
# buildah runs with chroot isolation: no daemon, no user namespaces, no container runtime.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/spindle:dev}
BASE=${BASE:-localhost/debian:12}
ARCHIVE=${ARCHIVE:-build/spindle-oci.tar}
if [ -z "${VERSION:-}" ] || [ -z "${REVISION:-}" ]; then
	read -r make_version make_revision < <(make -s --no-print-directory print-version)
	VERSION=${VERSION:-$make_version}
	REVISION=${REVISION:-$make_revision}
fi
# A tag may hold letters, digits, '_', '.' and '-' (a semver build's '+' becomes '_').
repo=$IMAGE
case ${IMAGE##*/} in *:*) repo=${IMAGE%:*} ;; esac
VERSION_IMAGE="$repo:$(printf '%s' "$VERSION" | tr -c 'A-Za-z0-9_.-' '_' | cut -c 1-128)"
# Where the source is, as a URL to browse: an ssh remote becomes https, and any user or token
# in the remote's URL is left out of the label.
source_url() {
	git remote get-url origin 2>/dev/null | sed -E \
		-e 's#^[^/@:]+@([^/:]+):#https://\1/#' -e 's#^ssh://([^@/]*@)?#https://#' \
		-e 's#^(https?://)[^/@]*@#\1#' -e 's#\.git$##' || true
}
SOURCE_URL=${SOURCE_URL:-$(source_url)}

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

echo "== image $IMAGE ($VERSION_IMAGE) from $BASE: spindle $VERSION, revision $REVISION"
t1=$(date +%s)
# The OCI annotations (image-spec annotations.md) that registries and scanners show. Title and
# description are in the Dockerfile; these depend on the build.
labels=(--label "org.opencontainers.image.version=$VERSION"
	--label "org.opencontainers.image.revision=$REVISION"
	--label "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
if [ -n "$SOURCE_URL" ]; then
	labels+=(--label "org.opencontainers.image.source=$SOURCE_URL")
else
	echo "note: no org.opencontainers.image.source label: this checkout has no origin remote (SOURCE_URL=https://... sets it)"
fi
# VERSION and REVISION go in as build arguments: the build's context has no .git.
buildah build --isolation chroot --network host --layers \
	--build-arg BASE="$BASE" --build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" \
	"${labels[@]}" --tag "$IMAGE" --tag "$VERSION_IMAGE" --file Dockerfile .
echo "image built in $(($(date +%s) - t1)) s"

echo "== checks inside $IMAGE"
ctr=$(buildah from --quiet "$IMAGE")
reported=$(buildah run --isolation chroot "$ctr" -- spindle --version)
echo "$reported"
# The build cache must not hand back a binary of another version.
expected="spindle $VERSION"
[ "$REVISION" = unknown ] || expected+=" (revision $REVISION)"
if [ "$reported" != "$expected" ]; then
	echo "error: the image's spindle says '$reported', not '$expected'" >&2
	exit 1
fi
# The shipped example expands ${NODE_IP}, which the DaemonSet sets from status.hostIP.
buildah run --isolation chroot --env NODE_IP=198.18.0.1 "$ctr" -- \
	spindle --check-config /etc/spindle/spindle.yaml
echo "check-config: ok"
buildah images --format 'image {{.Name}}:{{.Tag}} {{.Size}}' "$IMAGE"

echo "== OCI archive $ARCHIVE"
mkdir -p "$(dirname "$ARCHIVE")"
rm -f "$ARCHIVE"
# The reference inside names the image for `podman load`; skopeo copy ignores it.
buildah push --quiet "$IMAGE" "oci-archive:$ARCHIVE:$VERSION_IMAGE" >/dev/null
# Read back as a registry client would: the labels must be there.
label() {
	skopeo inspect --format "{{ index .Labels \"org.opencontainers.image.$1\" }}" \
		"oci-archive:$ARCHIVE"
}
for key in version revision; do
	want=$VERSION
	[ "$key" = version ] || want=$REVISION
	got=$(label "$key")
	if [ "$got" != "$want" ]; then
		echo "error: $ARCHIVE: label org.opencontainers.image.$key is '$got', not '$want'" >&2
		exit 1
	fi
done
# shellcheck disable=SC2016  # a Go template, not shell
skopeo inspect --format '{{ range $k, $v := .Labels }}label {{ $k }}={{ $v }}
{{ end }}' "oci-archive:$ARCHIVE"
echo "archive $ARCHIVE: $(du -m "$ARCHIVE" | cut -f 1) MB ($(skopeo inspect --format '{{ .Architecture }}' "oci-archive:$ARCHIVE"))"
echo "push it with: skopeo copy oci-archive:$ARCHIVE docker://REGISTRY/spindle:${VERSION_IMAGE##*:}"
echo "total $(($(date +%s) - t0)) s"
