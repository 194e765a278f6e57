# syntax=docker/dockerfile:1
#
# wxtoken in a container: a static binary in distroless, running as a non-root
# user. Mount the keys directory (read-only is fine) and the appsecret file:
#
#   docker run -p 8080:8080 \
#     -v "$PWD/keys:/keys:ro" -v "$PWD/appsecret:/run/secrets/wechat/appsecret:ro" \
#     -e WECHAT_APPID=wx... -e WECHAT_SECRET_FILE=/run/secrets/wechat/appsecret \
#     -e WXTOKEN_ISSUER=https://auth.example.com wxtoken
#
# No HEALTHCHECK: the orchestrator probes /healthz and /readyz itself.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Modules first, so a code change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO off: a static binary that needs no libc in the runtime image.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/wxtoken .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/wxtoken /usr/local/bin/wxtoken
# 65532 is distroless's "nonroot". Key files must be readable by it (or by its
# group: with Kubernetes, set fsGroup to 65532).
USER 65532:65532
# No WECHAT_SECRET_FILE default: with WXTOKEN_APPS_FILE each app's secret is
# in the apps file, and the two together are refused.
ENV WXTOKEN_ADDR=:8080 \
    WXTOKEN_KEYS_DIR=/keys
EXPOSE 8080
VOLUME ["/keys"]
ENTRYPOINT ["/usr/local/bin/wxtoken"]
CMD ["serve"]
