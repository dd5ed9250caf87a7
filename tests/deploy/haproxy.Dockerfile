# haproxy:2.8 for tests/deploy/compose_test.sh, from Debian's haproxy (2.6),
# since no registry is reachable in CI. It behaves as the official image
# does for docker-compose.yml: configuration in /usr/local/etc/haproxy,
# `haproxy ...` run in the foreground in master-worker mode (-W -db), as
# the haproxy user, stopped with SIGUSR1 (soft stop).
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /usr/local/etc/haproxy
LABEL wsbroker.test-image="tests/deploy/haproxy.Dockerfile: Debian's haproxy"
WORKDIR /var/lib/haproxy
USER haproxy
STOPSIGNAL SIGUSR1
ENTRYPOINT ["/bin/sh", "-c", "if [ \"$1\" = haproxy ]; then shift; set -- haproxy -W -db \"$@\"; fi; exec \"$@\"", "sh"]
CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
