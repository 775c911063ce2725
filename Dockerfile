# syntax=docker/dockerfile:1
# One image with both binaries in /usr/local/bin, tailor-recommender and tailor-updater; the
# manifests pick one with `command:` (docker run IMAGE tailor-updater run --dry-run).
#
#   docker build -t ghcr.io/tailor-dev/tailor:0.1.0 .

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p tailor-recommender -p tailor-updater \
    && install -D -m 0755 target/release/tailor-recommender /out/tailor-recommender \
    && install -D -m 0755 target/release/tailor-updater /out/tailor-updater

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="tailor" \
      org.opencontainers.image.description="In-place vertical autoscaler for Kubernetes" \
      org.opencontainers.image.source="https://github.com/tailor-dev/tailor" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/tailor-recommender /out/tailor-updater /usr/local/bin/
USER 65532:65532
EXPOSE 8080
CMD ["/usr/local/bin/tailor-recommender", "--help"]
