# redis:7 for tests/deploy/compose_test.sh, from Debian's redis-server
# (7.0), since no registry is reachable in CI. It offers what
# docker-compose.yml uses of the official image: redis-server and redis-cli
# on PATH, /data owned by the redis user, running as that user.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data /usr/local/etc/redis \
 && chown redis:redis /data
LABEL wsbroker.test-image="tests/deploy/redis.Dockerfile: Debian's redis-server"
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server"]
