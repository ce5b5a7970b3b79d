# spindle's container image: a build stage with the toolchain and -dev packages, and a runtime
# stage with only the shared libraries the binary links against. Debian 12 for both, so the
# libraries are the ones it was built and tested with.
#
#   make image      no daemon, no internet (tools/build-image.sh): version, revision and the
#                   OCI labels filled in, an OCI archive in build/spindle-oci.tar
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#                --build-arg REVISION=$(git rev-parse HEAD) -t spindle .      (pulls debian:12)
#
# The architecture is the build host's: on an arm64 host the same file gives an arm64 image
# (docs/deploy-kubernetes.md).
ARG BASE=debian:12

FROM ${BASE} AS build
# The build half of the Makefile's DEPS_BUILD (the unit tests' libgtest-dev is not needed).
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      make g++ pkg-config clang llvm bpftool libbpf-dev liburing-dev libfmt-dev \
      libyaml-cpp-dev libnghttp2-dev libc-ares-dev libjemalloc-dev libseccomp-dev \
      nlohmann-json3-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY include/ include/
COPY bpf/ bpf/
COPY daemon/ daemon/
# What --version and spindle_build_info say. The context has no .git for make to ask: without
# these it is "unknown" (or, built from a `git archive` tarball, what git wrote into
# tools/archive-version).
COPY tools/archive-version tools/
ARG VERSION=
ARG REVISION=
# The BPF object is embedded in the binary (skeleton): one file to ship. Debug info stripped:
# it is most of the file's size.
RUN make -j"$(nproc)" VERSION="$VERSION" REVISION="$REVISION" build/bin/spindle \
 && strip --strip-debug build/bin/spindle

FROM ${BASE}
# Exactly the libraries `ldd build/bin/spindle` names, Debian 12 package names.
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      libbpf1 liburing2 libnghttp2-14 libc-ares2 libyaml-cpp0.7 libfmt9 libelf1 zlib1g \
      libjemalloc2 libseccomp2 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/bin/spindle /usr/local/bin/spindle
# The example config, for `docker run`; in Kubernetes the ConfigMap is mounted over it.
COPY k8s/spindle.yaml /etc/spindle/spindle.yaml
# OCI labels that do not depend on the build; tools/build-image.sh adds version, revision,
# created and source.
LABEL org.opencontainers.image.title="spindle" \
      org.opencontainers.image.description="Per-call gRPC load balancing for every Pod of a node, as a DaemonSet"
# Root inside the container, but the DaemonSet drops every capability except the few spindle
# needs (k8s/daemonset.yaml says why each one).
ENTRYPOINT ["/usr/local/bin/spindle"]
CMD ["--config", "/etc/spindle/spindle.yaml"]
