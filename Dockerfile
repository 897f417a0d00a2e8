# syntax=docker/dockerfile:1
# Multi-stage build: a release binary built with cached dependencies, run as a non-root
# user in a small distroless image. Build: docker build -t loyalty:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so that a change to the service's code does not rebuild them.
COPY Cargo.toml Cargo.lock build.rs ./
COPY vendor vendor
COPY migrations migrations
COPY proto proto
RUN mkdir -p src/bin && echo 'fn main() {}' > src/main.rs && echo 'fn main() {}' > src/bin/loyalty-bench.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin loyalty \
    && rm -rf src
COPY src src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin loyalty

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/loyalty /usr/local/bin/loyalty
# gRPC and Prometheus metrics.
EXPOSE 50051 9464
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/loyalty"]
CMD ["serve"]
