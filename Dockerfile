# The ebb image: a static-ish release build on Debian, run as a non-root user.
# docker build -t ghcr.io/ebb-autoscaler/ebb:$(git describe --tags --always) .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin ebb

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/ebb /usr/local/bin/ebb
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ebb"]
CMD ["serve"]
