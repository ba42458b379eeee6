# For users who build with docker (or buildah/podman) and can reach Docker Hub and gcr.io:
#   docker build -t REGISTRY/ebb:TAG .
#
# NOT BUILT OR TESTED BY THIS PROJECT. The machine ebb is developed and tested on reaches no
# container registry, so the two base images below cannot be pulled there. What CI builds, and
# what tests/image.rs runs under runc against a real control plane, is the image of
# scripts/build-image (README, Install): FROM scratch, with ebb and the same Debian 12 pieces that
# distroless/cc-debian12 holds (glibc's loader and libraries, libgcc_s, the CA bundle, user 65532,
# no shell), reproducible. Prefer it; this file is a convenience and may lag behind.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml declares the benches: cargo reads them even to build the binary.
COPY benches ./benches
RUN cargo build --release --locked --bin ebb

# Debian 12's glibc, libgcc_s and CA certificates, user nonroot (65532), no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/ebb /usr/local/bin/ebb
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ebb"]
CMD ["serve"]
