# syntax=docker/dockerfile:1
#
# The one stackvps image: every stage, migrate, simulate and doctor run from it
# (see docker-compose.yml). Build: docker build -t stackvps:local .

# --- build -------------------------------------------------------------------
FROM golang:1.26-bookworm AS build
WORKDIR /src

# Modules first, so a source change does not re-download them. The cache
# mounts keep the module and build caches across builds without putting them
# in any layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -o /out/stackvps ./cmd/stackvps

# --- run ---------------------------------------------------------------------
# Static binary on distroless: CA certificates and tzdata, no shell, no
# package manager; runs as uid 65532 (nonroot).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/stackvps /stackvps
USER nonroot:nonroot
# HTTP: /metrics, /healthz, /readyz and, with the api stage, the query API.
EXPOSE 8000
ENTRYPOINT ["/stackvps"]
