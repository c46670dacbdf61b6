#!/usr/bin/env bash
# A private CA and certificates signed by it, with openssl:
#   examples/nginx/private-ca.sh /etc/nginx/obb gateway obb.example.com   # nginx's (or the gateway's) certificate
#   examples/nginx/private-ca.sh /etc/nginx/obb gpu-box-1                 # a node's client certificate (mutual TLS)
# Usage: private-ca.sh DIR NAME [HOST...]. The first run makes DIR/ca.pem (what nodes trust:
# `[server] ca_cert`) and DIR/ca.key (keep it private); every run writes DIR/NAME.pem and
# DIR/NAME.key, a certificate for the HOSTs (host names or IP addresses; NAME when none)
# that serves as a server or a client certificate. The tests run this script
# (node/tests/e2e/proxy.rs).
set -euo pipefail

dir=${1:?usage: private-ca.sh DIR NAME [HOST...]}
name=${2:?usage: private-ca.sh DIR NAME [HOST...]}
shift 2
[ "$#" -gt 0 ] || set -- "$name"
mkdir -p "$dir"
umask 077

if [ ! -f "$dir/ca.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=OpenBeepBoop private CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem"
fi

# TLS clients check the subjectAltName, never the common name.
names=()
for host in "$@"; do
  if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then
    names+=("IP:$host")
  else
    names+=("DNS:$host")
  fi
done
san=$(IFS=,; echo "${names[*]}")

openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
  -keyout "$dir/$name.key" -out "$dir/$name.csr"
openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
  -set_serial "0x$(openssl rand -hex 16)" -days 825 -sha256 -out "$dir/$name.pem" \
  -extfile <(printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth,clientAuth" \
    "subjectAltName=$san")
rm -f "$dir/$name.csr"
chmod 644 "$dir/ca.pem" "$dir/$name.pem"
echo "$dir/$name.pem $dir/$name.key (CA: $dir/ca.pem)"
