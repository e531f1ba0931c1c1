# The gigafab image: one image for the operator, the site gateways and the node agents
# (the chart picks the command: `gigafab operator`, `gigafab gateway`, `gigafab agent`).
# It is not built on the development machine (no container engine there); CI for images
# runs elsewhere. Build: docker build -t registry.gigafab.nl/gigafab/gigafab:0.1.0 .

# crictl, through which an agent fences its node (stops the gigafab pod sandboxes), built from
# its Go module (sigs.k8s.io/cri-tools) at the version the local plane's tests run
# (gigafab.local.layout.CRICTL_VERSION), with its version stamped as cri-tools' Makefile does.
FROM golang:1.26-bookworm AS crictl
ARG CRICTL_VERSION=v1.37.0
RUN CGO_ENABLED=0 GOBIN=/out go install -trimpath \
      -ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION}" \
      sigs.k8s.io/cri-tools/cmd/crictl@${CRICTL_VERSION}

# gigafab-edge, the gateway's compiled edge (agents/edge): carries the agents' mTLS and gRPC.
FROM golang:1.26-bookworm AS edge
WORKDIR /src
COPY agents/edge ./
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/gigafab-edge .

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY operator ./operator
COPY agents ./agents
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir /wheels/*.whl \
 && useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin gigafab
COPY --from=crictl /out/crictl /usr/local/bin/crictl
COPY --from=edge /out/gigafab-edge /usr/local/bin/gigafab-edge
# NVML (libnvidia-ml.so) comes from the node through the NVIDIA container runtime.
USER 65532
ENTRYPOINT ["gigafab"]
CMD ["--help"]
