#!/usr/bin/env bash
# Make the certificates the TLS tests use, with the openssl command, into DIR:
#
#   ca.pem              a test CA (P-256 keys throughout: quick to make)
#   server.pem/.key     signed by it, for DNS:localhost and IP:127.0.0.1
#   other.pem/.key      signed by it, for DNS:other.invalid only (name mismatch)
#   self.pem/.key       self-signed, for DNS:localhost and IP:127.0.0.1
#
#   make_certs.sh DIR
# Valid for two days; nothing here is secret or kept.
set -euo pipefail
dir="${1:?usage: make_certs.sh DIR}"
mkdir -p "$dir"
cd "$dir"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj /CN=wsbroker-test-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  2>/dev/null

# leaf NAME SAN: a certificate signed by the CA
leaf() {
  openssl req "${ec[@]}" -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$2" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
leaf server "DNS:localhost,IP:127.0.0.1"
leaf other "DNS:other.invalid"

openssl req -x509 "${ec[@]}" -keyout self.key -out self.pem -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
rm -f ca.srl
