# syntax=docker/dockerfile:1
#
# edgesync container image: two stages.
#   build: golang:1.26 compiles static binaries (CGO_ENABLED=0), so the final image needs no libc.
#   final: distroless static, non-root, no shell, no package manager.
#
#   docker build --build-arg VERSION=v0.1.0 --build-arg COMMIT=$(git rev-parse --short HEAD) -t edgesync:v0.1.0 .
#
# The final image holds /edgesync (the daemon and CLI) and /icp-replica (the local ICP replica double,
# for development and CI only; production talks to a real boundary node).
#
# Data directory: EDGESYNC_DATA_DIR is only used by the embedded NATS server, which runs only when
# EDGESYNC_NATS_URL is empty (development). Production points at an external NATS cluster, so the
# image needs no writable /data and Kubernetes runs it with a read-only root filesystem. The image
# still ships an empty /data owned by the non-root user so that `docker run -v edgesync-data:/data`
# works for a quick local trial with embedded NATS.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
WORKDIR /src
# Dependencies first: this layer is reused until go.mod/go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    export GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH:-amd64} && \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o /out/edgesync ./cmd/edgesync && \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o /out/icp-replica ./cmd/icp-replica && \
    mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="edgesync" \
      org.opencontainers.image.description="Postgres CDC daemon: storage_edges, NATS JetStream events, ICP mirror, reconcile" \
      org.opencontainers.image.source="https://github.com/edgesync/edgesync" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
COPY --from=build /out/edgesync /edgesync
COPY --from=build /out/icp-replica /icp-replica
COPY --from=build --chown=65532:65532 /out/data /data
ENV EDGESYNC_HTTP_ADDR=:8080 \
    EDGESYNC_DATA_DIR=/data \
    EDGESYNC_LOG_FORMAT=json
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/edgesync"]
CMD ["run"]
