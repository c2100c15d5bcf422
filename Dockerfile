# One image build, one target per service. Every target has all the binaries (chat,
# chat-gateway, chat-history, chat-presence, chat-accounts, chat-bench, chat-probe) on
# the same shared layers; targets differ only in entrypoint, default listen address,
# exposed ports and HEALTHCHECK:
#
#   docker build --target gateway  -t chat-gateway .    # also: history, presence, accounts, bench
#   docker build -t chat .                              # default target: the all-in-one
#
# docker-compose.yml builds each service from its target; BuildKit (and the classic
# builder) reuse the compiled stages, so Rust is compiled once for all of them.
#
# Stages:
#   toolchain  Rust on Debian bookworm (protoc comes from protoc-bin-vendored at build time)
#   skeleton   the workspace's manifests with every target replaced by an empty stub
#   deps       all dependencies compiled against the skeleton: a layer that is reused
#              until a Cargo.toml or Cargo.lock changes
#   build      the real sources compiled on top (build arg CHAT_GIT_COMMIT: build_info's
#              git_commit)
#   runtime    distroless/cc (glibc, no shell, no package manager), user nonroot (65532)
#
# Health checks run `chat-probe` (the image has no shell or curl): HTTP 200 from the
# gateway's /healthz, gRPC SERVING from the standard health service of history, presence
# and accounts (SERVING only while their store answers). They assume the default ports;
# override HEALTHCHECK (or the compose `healthcheck:`) when you change them.

# Rust >= 1.90 (redb needs it).
ARG RUST_VERSION=1.95
ARG PACKAGES="-p chat -p chat-gateway -p chat-history -p chat-presence -p chat-accounts -p chat-bench -p chat-probe"

FROM rust:${RUST_VERSION}-slim-bookworm AS toolchain
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

FROM toolchain AS skeleton
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY . /context
# Keep Cargo.toml/Cargo.lock; give every crate an empty lib, main and build script, and
# every explicitly declared bench/test/example/bin a `fn main() {}` (cargo refuses a
# manifest whose declared targets are missing).
RUN set -eu; \
    mkdir -p /skeleton; \
    cp /context/Cargo.toml /context/Cargo.lock /skeleton/; \
    for manifest in /context/crates/*/Cargo.toml; do \
        src="$(dirname "$manifest")"; \
        dst="/skeleton/crates/$(basename "$src")"; \
        mkdir -p "$dst/src"; \
        cp "$manifest" "$dst/Cargo.toml"; \
        : > "$dst/src/lib.rs"; \
        echo 'fn main() {}' > "$dst/src/main.rs"; \
        if [ -f "$src/build.rs" ]; then echo 'fn main() {}' > "$dst/build.rs"; fi; \
        awk ' \
            function flush() { \
                if (kind != "" && (name != "" || path != "")) \
                    print (path != "" ? path : dir[kind] "/" name ".rs"); \
                kind = ""; name = ""; path = "" \
            } \
            BEGIN { dir["bench"] = "benches"; dir["test"] = "tests"; \
                    dir["example"] = "examples"; dir["bin"] = "src/bin" } \
            /^\[\[(bench|test|example|bin)\]\]/ { flush(); kind = $0; gsub(/[][]/, "", kind); next } \
            /^\[/ { flush(); next } \
            kind != "" && /^name *=/ { name = $0; sub(/^name *= *"/, "", name); sub(/".*/, "", name) } \
            kind != "" && /^path *=/ { path = $0; sub(/^path *= *"/, "", path); sub(/".*/, "", path) } \
            END { flush() }' "$manifest" \
        | while read -r target; do \
            mkdir -p "$dst/$(dirname "$target")"; \
            [ -f "$dst/$target" ] || echo 'fn main() {}' > "$dst/$target"; \
        done; \
    done

FROM toolchain AS deps
ARG PACKAGES
COPY --from=skeleton /skeleton/ ./
RUN cargo build --release --locked $PACKAGES

FROM deps AS build
ARG PACKAGES
COPY . .
# The commit build_info reports (git_commit; `unknown` when not given), read by rustc at
# compile time: `docker build --build-arg CHAT_GIT_COMMIT=$(git rev-parse HEAD) .`
# (compose passes it from the environment). Declared here, after the deps stage, so a new
# commit never invalidates the dependency layer.
ARG CHAT_GIT_COMMIT=unknown
ENV CHAT_GIT_COMMIT=${CHAT_GIT_COMMIT}
# The stubs were compiled after the real files' mtimes: touch the sources so cargo
# rebuilds the workspace crates (dependencies stay cached).
RUN find crates proto -type f -exec touch {} + \
    && cargo build --release --locked $PACKAGES \
    && mkdir -p /out/bin /out/data \
    && cp target/release/chat target/release/chat-gateway target/release/chat-history \
          target/release/chat-presence target/release/chat-accounts target/release/chat-bench \
          target/release/chat-probe /out/bin/

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/bin/ /usr/local/bin/
# The embedded store's directory (history, accounts and the all-in-one without MongoDB).
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /data
USER 65532:65532
ENV RUST_LOG=info \
    CHAT_DATA_DIR=/data
STOPSIGNAL SIGTERM

FROM runtime AS history
ENV CHAT_GRPC_ADDR=0.0.0.0:50051 \
    CHAT_METRICS_ADDR=0.0.0.0:9100
EXPOSE 50051 9100
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/chat-probe", "grpc://127.0.0.1:50051"]
ENTRYPOINT ["/usr/local/bin/chat-history"]

FROM runtime AS presence
ENV CHAT_GRPC_ADDR=0.0.0.0:50052 \
    CHAT_METRICS_ADDR=0.0.0.0:9100
EXPOSE 50052 9100
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/chat-probe", "grpc://127.0.0.1:50052"]
ENTRYPOINT ["/usr/local/bin/chat-presence"]

FROM runtime AS accounts
ENV CHAT_GRPC_ADDR=0.0.0.0:50053 \
    CHAT_METRICS_ADDR=0.0.0.0:9100
EXPOSE 50053 9100
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/chat-probe", "grpc://127.0.0.1:50053"]
ENTRYPOINT ["/usr/local/bin/chat-accounts"]

FROM runtime AS gateway
ENV CHAT_HTTP_ADDR=0.0.0.0:8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/chat-probe", "http://127.0.0.1:8000/healthz"]
ENTRYPOINT ["/usr/local/bin/chat-gateway"]

FROM runtime AS bench
ENTRYPOINT ["/usr/local/bin/chat-bench"]

# Default target (last): the all-in-one, embedded store in /data.
FROM runtime AS chat
ENV CHAT_HTTP_ADDR=0.0.0.0:8000
EXPOSE 8000
VOLUME ["/data"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/chat-probe", "http://127.0.0.1:8000/healthz"]
ENTRYPOINT ["/usr/local/bin/chat"]
