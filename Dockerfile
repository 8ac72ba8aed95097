# s3nbd as a container: docker run -p 10809:10809 -v s3nbd-cache:/var/cache/s3nbd \
#   -e S3NBD_STORE=s3://bucket/volume -e S3NBD_SIZE=100G -e AWS_ACCESS_KEY_ID=... ghcr.io/.../s3nbd
#
# TLS on the NBD connection: mount the certificate directory (server-cert.pem, server-key.pem,
# ca-cert.pem; the key readable by uid 1000) read-only and name it:
#   -v /etc/s3nbd/certs:/certs:ro -e S3NBD_TLS=require -e S3NBD_TLS_CERTIFICATES=/certs
# (add -e S3NBD_TLS_VERIFY_PEER=1 to require client certificates), or a psktool key file:
#   -v /etc/s3nbd/keys.psk:/keys.psk:ro -e S3NBD_TLS=require -e S3NBD_TLS_PSK=/keys.psk
# See docs/tls.md.
#
# The build and start steps live in scripts/image-*.sh, which CI also runs outside Docker,
# so what is tested is what the image does. The Node.js major is the one CI tests on.

ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src/ src/
COPY scripts/image-build.sh scripts/build-info.mjs scripts/copy-assets.mjs scripts/
# The build context has no .git: `docker build --build-arg S3NBD_COMMIT=$(git rev-parse --short=12 HEAD)`
# puts the commit into `s3nbd --version`.
ARG S3NBD_COMMIT=unknown
RUN bash scripts/image-build.sh /app

FROM ${NODE_IMAGE}
COPY --from=build /app /app
COPY scripts/image-start.sh /app/scripts/image-start.sh
# Settings come from S3NBD_* variables; these are the container's defaults.
ENV NODE_ENV=production \
    S3NBD_LISTEN=0.0.0.0:10809 \
    S3NBD_ADMIN_LISTEN=127.0.0.1:9101 \
    S3NBD_CACHE_DIR=/var/cache/s3nbd \
    S3NBD_STORE=/var/lib/s3nbd/data
RUN mkdir -p /var/cache/s3nbd /var/lib/s3nbd && chown 1000:1000 /var/cache/s3nbd /var/lib/s3nbd
# The image's unprivileged "node" user.
USER 1000:1000
VOLUME ["/var/cache/s3nbd"]
EXPOSE 10809
# The admin endpoint (docs/monitoring.md) listens inside the container only, for the health
# check below. To scrape /metrics from outside, listen on all interfaces with a token:
#   -e S3NBD_ADMIN_LISTEN=0.0.0.0:9101 -e S3NBD_ADMIN_TOKEN_FILE=/run/secrets/s3nbd-admin -p 9101:9101
# The check asks /healthz (the process answers), not /readyz: an orchestrator that restarts
# unhealthy containers must not restart a gateway because S3 was briefly away (it would drop
# its clients and gain nothing: the journal waits for S3 either way). Use /readyz to route
# clients or to alert (s3nbd health --ready, a Kubernetes readinessProbe).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["/app/scripts/image-start.sh", "health"]
# node runs as PID 1 and handles SIGTERM itself: it drains dirty data before exiting, so give
# `docker stop` time for that (docker stop -t 600, or stop_grace_period in compose).
ENTRYPOINT ["/app/scripts/image-start.sh"]
CMD ["serve"]
