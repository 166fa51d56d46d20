# syntax=docker/dockerfile:1
# One image for every faultline process: the controller, the node agent and the demo app.
#
#   docker build -t faultline:dev .      (or `make image`)
#
# The image's default user is unprivileged (65532). The Helm chart sets the user explicitly for
# each process: the controller and the demo app run as 65532 with no capabilities; the node agent
# runs as root with exactly NET_ADMIN, SYS_ADMIN and SYS_PTRACE (see charts/faultline/values.yaml).

# --- build ------------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
# Only what cargo needs: the manifest, the lock file, the sources. benches/ because Cargo.toml
# declares [[bench]] targets and cargo checks that their files exist even for `--bin`.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# --locked: the image gets exactly the dependency versions the tests ran with.
# The cache mounts keep the registry and target/ between builds on the same machine; the binary
# is copied out of the cache because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin faultline \
    && install -D -m 0755 target/release/faultline /out/faultline

# --- runtime ----------------------------------------------------------------------------------
FROM debian:bookworm-slim
# What the node agent drives inside pods' network namespaces:
#   nftables  -> nft       (partitions; packet marks for shaped traffic)
#   iptables  -> iptables  (the NFQUEUE target: userspace latency/loss on kernels without netem)
#   iproute2  -> tc, ip    (netem, tbf/htb bandwidth, clsact filters)
# ca-certificates: HTTPS probes and Prometheus endpoints with public certificates.
RUN apt-get update \
    && apt-get install -y --no-install-recommends nftables iptables iproute2 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A named unprivileged user, so `ps` and audit logs show who runs the controller.
RUN groupadd --system --gid 65532 faultline \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin faultline
COPY --from=build /out/faultline /usr/local/bin/faultline
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/faultline"]
CMD ["--help"]

LABEL org.opencontainers.image.title="faultline" \
      org.opencontainers.image.description="Kubernetes chaos engineering controller: faults that never outlive their experiment" \
      org.opencontainers.image.licenses="Apache-2.0"
