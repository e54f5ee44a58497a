#!/usr/bin/env bash
# AWS's SSL/TLS offload walkthrough, end to end, against the local cluster that
# `scripts/cluster.sh start` (make cluster) runs:
#
#   scripts/demo.sh        import an existing key with key_mgmt_util; generate an ECDSA
#                          P-256 key pair there (genECCKeyPair) and an RSA key with
#                          `openssl genrsa`, both in the HSMs; make a CSR and self-signed
#                          certificates; check the keys with cloudhsm_check; start nginx
#                          (2 workers) with the RSA and the ECDSA certificate in one server
#                          block; fetch a page over TLS 1.3 and TLS 1.2 with each; show how
#                          many private-key operations (RSA sign, decrypt, ECDSA sign) each
#                          node served. nginx is left running. Safe to run again: it stops
#                          the nginx of the previous run first and makes fresh keys.
#   scripts/demo.sh stop   stop the nginx the demo left running (the cluster keeps running:
#                          scripts/cluster.sh stop, or make stop-cluster)
#
# Environment:
#   CLUSTER_DIR  the cluster's state directory (default .cluster; `make demo CLUSTER_DIR=...
#                CLUSTER_PORTS="p1 p2 p3"` starts and uses a cluster elsewhere)
#   DEMO_DIR     where the demo's files go (default .demo); nginx's prefix is DEMO_DIR/nginx
#   DEMO_PORT    nginx's port on 127.0.0.1 (default 8443, or the next free one after it)
#   NGINX        the nginx executable (default /usr/sbin/nginx, else nginx on PATH)
#   KMU_TIMEOUT  seconds to wait for each key_mgmt_util answer (default 60)
set -euo pipefail

CLUSTER_DIR="${CLUSTER_DIR:-.cluster}"
DEMO_DIR="${DEMO_DIR:-.demo}"
KMU_TIMEOUT="${KMU_TIMEOUT:-60}"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
say() { printf '    %s\n' "$*"; }
die() {
    printf '\ndemo: error: %s\n' "$*" >&2
    exit 1
}
# Any command that fails outside the checks below still names itself.
trap 'die "unexpected failure (status $?) at line $LINENO: $BASH_COMMAND"' ERR

# run CMD...: show the command, run it, show its output indented; a failure is fatal.
run() {
    local shown=() arg
    for arg in "$@"; do
        if [[ "$arg" =~ [[:space:]] ]]; then arg="'$arg'"; fi
        shown+=("$arg")
    done
    if [[ "${shown[0]}" == plain ]]; then shown[0]="OPENSSL_CONF=/dev/null openssl"; fi
    printf '    $ %s\n' "${shown[*]}"
    local out rc=0
    out="$("$@" 2>&1)" || rc=$?
    [[ -z "$out" ]] || printf '%s\n' "$out" | sed 's/^/      /'
    ((rc == 0)) || die "\`$*\` failed (exit status $rc); its output is above"
}
# plain ARGS...: openssl with no configuration at all (the default provider only).
plain() { OPENSSL_CONF=/dev/null openssl "$@"; }

readonly SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$DEMO_DIR"
DEMO_DIR="$(cd "$DEMO_DIR" && pwd)"
readonly NGINX_PREFIX="$DEMO_DIR/nginx"
readonly NGINX_CONF="$NGINX_PREFIX/nginx.conf"
readonly NGINX_PID="$NGINX_PREFIX/nginx.pid"
readonly NGINX_LOG="$NGINX_PREFIX/logs/error.log"
if [[ -z "${NGINX:-}" ]]; then
    if [[ -x /usr/sbin/nginx ]]; then NGINX=/usr/sbin/nginx; else NGINX="$(command -v nginx || true)"; fi
fi

# ---------------------------------------------------------------------------- nginx

# Prints the pid of the nginx master this demo started, if it still runs.
nginx_master() {
    local pid
    [[ -f "$NGINX_PID" ]] || return 1
    pid="$(<"$NGINX_PID")"
    [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == nginx ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$NGINX_CONF" || return 1
    echo "$pid"
}

# Stops it: QUIT (graceful), then TERM, then KILL. A plain signal needs no environment;
# `nginx -s quit` would parse nginx.conf and so load the key, which needs the provider.
stop_nginx() {
    local pid deadline
    if ! pid="$(nginx_master)"; then
        rm -f "$NGINX_PID"
        return 1
    fi
    say "stopping nginx (master pid $pid): kill -QUIT $pid"
    kill -QUIT "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 15))
    while [[ -d "/proc/$pid" ]] && ((SECONDS < deadline)); do sleep 0.1; done
    if [[ -d "/proc/$pid" ]]; then
        say "nginx did not quit within 15s; sending TERM"
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 5))
        while [[ -d "/proc/$pid" ]] && ((SECONDS < deadline)); do sleep 0.1; done
        if [[ -d "/proc/$pid" ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$NGINX_PID"
    say "nginx stopped"
}

if [[ "${1:-}" == stop ]]; then
    stop_nginx || echo "demo: no nginx of the demo is running ($NGINX_PID)"
    exit 0
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [stop]" >&2
    exit 2
fi

port_in_use() {
    if command -v ss >/dev/null; then
        [[ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

# ---------------------------------------------------------------------------- checks

[[ -f "$CLUSTER_DIR/env" ]] || die "$CLUSTER_DIR/env not found: start the cluster first (make cluster)"
CLUSTER_DIR="$(cd "$CLUSTER_DIR" && pwd)"
# shellcheck source=/dev/null
. "$CLUSTER_DIR/env"
command -v key_mgmt_util >/dev/null || die "key_mgmt_util is not on PATH after sourcing $CLUSTER_DIR/env"
command -v cloudhsm_check >/dev/null || die "cloudhsm_check is not on PATH after sourcing $CLUSTER_DIR/env (make build)"
[[ -n "${OPENSSL_CONF:-}" && -f "$OPENSSL_CONF" ]] ||
    die "$CLUSTER_DIR/env sets no OPENSSL_CONF: the provider was not built when the cluster started (make build, then make cluster)"
[[ -n "$NGINX" && -x "$NGINX" ]] || die "nginx is not installed (make deps installs it)"
command -v curl >/dev/null || die "curl is not installed (make deps installs it)"
cd "$DEMO_DIR"

step "0. Stop the nginx a previous demo run left running, if any"
stop_nginx || say "none running"

step "1. The cluster: $CLUSTER_DIR/cluster.cfg names these nodes (trust anchor: the cluster CA)"
grep -E '^(cluster_id|trust_anchor|node)' "$CLOUDHSM_CONFIG" | sed 's/^/    /'
CLUSTER_DIR="$CLUSTER_DIR" "$SCRIPT_DIR/cluster.sh" status | sed 's/^/    /' ||
    die "not every node runs: start them with \`make cluster\` (scripts/cluster.sh start)"

# ============================================================================ import

step "2. Import path. An existing web server key made in software: openssl genrsa -out web_server_existing.key 2048"
# OPENSSL_CONF=/dev/null: plain OpenSSL, the key is made in software (the env file
# points OPENSSL_CONF at the cloudhsm provider, which would make it in the HSMs).
rm -f web_server_existing.key web_server_existing.pub web_server_imported_fake_PEM.key web_server_ec_fake_PEM.key
run plain genrsa -out web_server_existing.key 2048
plain pkey -in web_server_existing.key -pubout -out web_server_existing.pub
say "$(plain pkey -in web_server_existing.key -noout -text 2>/dev/null | head -n1)"

# key_mgmt_util reads its commands from a FIFO and writes a transcript, so that the
# handles it prints can be fed back to it in the same session (the wrapping key is a
# session key and dies with the session).
rm -f kmu.fifo kmu.transcript
mkfifo kmu.fifo
key_mgmt_util <kmu.fifo >kmu.transcript 2>&1 &
KMU_PID=$!
exec 3>kmu.fifo
trap 'exec 3>&- 2>/dev/null; kill "$KMU_PID" 2>/dev/null || true; rm -f "$DEMO_DIR/kmu.fifo"' EXIT
SHOWN=0   # transcript lines already shown
MATCH=""

# send LINE: one command to key_mgmt_util.
send() { printf '%s\n' "$1" >&3; }
# expect REGEX: show the transcript until a line matches REGEX (kept in MATCH); an
# "HSM Error" or "Error:" line first is fatal.
expect() {
    local line deadline=$((SECONDS + KMU_TIMEOUT))
    while ((SECONDS < deadline)); do
        while IFS= read -r line; do
            SHOWN=$((SHOWN + 1))
            printf '    | %s\n' "$line"
            if [[ "$line" =~ $1 ]]; then
                MATCH="$line"
                return 0
            fi
            [[ "$line" =~ (HSM\ Error|^Error:) ]] && die "key_mgmt_util reported an error (above)"
        done < <(tail -n "+$((SHOWN + 1))" kmu.transcript)
        kill -0 "$KMU_PID" 2>/dev/null || die "key_mgmt_util ended before printing /$1/"
        sleep 0.1
    done
    die "no /$1/ from key_mgmt_util within ${KMU_TIMEOUT}s"
}

step "3. key_mgmt_util: log in as the crypto user on every node"
send "loginHSM -u CU -s $CLOUDHSM_CU_USER -p $CLOUDHSM_CU_PASSWORD"
expect 'Cfm3LoginHSM returned'
[[ "$MATCH" == *"0x00"* ]] || die "loginHSM failed (above)"
nodes=$(grep -cE '^[[:space:]]*node[[:space:]]*=' "$CLOUDHSM_CONFIG")
expect "^Node id $((nodes - 1)) and err state"

step "4. A session-only AES-128 wrapping key (key type 31 = AES, 16 bytes)"
send "genSymKey -t 31 -s 16 -sess -l wrapping_key_for_import"
expect 'Symmetric Key Created\. +Key Handle: ([0-9]+)'
[[ "$MATCH" =~ Key\ Handle:\ ([0-9]+) ]]
wrap_handle=${BASH_REMATCH[1]}
expect 'Node id [0-9]+ and err state'
say "-> wrapping key handle $wrap_handle"

step "5. Import the software key: it is wrapped with key $wrap_handle and unwrapped inside the HSMs"
send "importPrivateKey -f web_server_existing.key -l web_server_imported_key -w $wrap_handle"
expect 'Private Key Unwrapped\. +Key Handle: ([0-9]+)'
[[ "$MATCH" =~ Key\ Handle:\ ([0-9]+) ]]
key_handle=${BASH_REMATCH[1]}
expect 'Node id [0-9]+ and err state'
say "-> private key handle $key_handle"

step "6. Export the fake PEM: a reference to handle $key_handle, no private key material"
send "getCaviumPrivKey -k $key_handle -out web_server_imported_fake_PEM.key"
expect 'written to'
expect 'getCaviumPrivKey returned'
[[ "$MATCH" == *"0x00"* ]] || die "getCaviumPrivKey failed (above)"

step "7. ECDSA path: an EC key pair made in the HSMs (curve id 2 = P-256, prime256v1), a token key"
send "genECCKeyPair -i 2 -l web_server_ec_key"
expect 'Cfm3GenerateKeyPair: +public key handle: ([0-9]+) +private key handle: ([0-9]+)'
[[ "$MATCH" =~ private\ key\ handle:\ ([0-9]+) ]]
ec_handle=${BASH_REMATCH[1]}
expect 'Node id [0-9]+ and err state'
say "-> EC private key handle $ec_handle"

step "8. Its fake PEM: a reference to handle $ec_handle whose public key says EC, P-256"
send "getCaviumPrivKey -k $ec_handle -out web_server_ec_fake_PEM.key"
expect 'written to'
expect 'getCaviumPrivKey returned'
[[ "$MATCH" == *"0x00"* ]] || die "getCaviumPrivKey failed (above)"

step "9. exit key_mgmt_util (the session wrapping key $wrap_handle goes with it)"
send "exit"
exec 3>&-
wait "$KMU_PID" || die "key_mgmt_util exited with status $?"
tail -n "+$((SHOWN + 1))" kmu.transcript | sed 's/^/    | /'
rm -f kmu.fifo
trap - EXIT

step "10. What the imported key's fake PEM holds"
sed 's/^/    /' web_server_imported_fake_PEM.key
if plain pkey -in web_server_imported_fake_PEM.key -noout 2>/dev/null; then
    die "openssl without the provider loaded the fake PEM as a software key: it must not"
fi
say "openssl without the cloudhsm provider refuses it (as it must: it holds no key);"
say "with the provider it is the same public key as the software key's:"
openssl pkey -in web_server_imported_fake_PEM.key -pubout -out web_server_imported.pub ||
    die "the provider could not read web_server_imported_fake_PEM.key"
cmp -s web_server_imported.pub web_server_existing.pub ||
    die "the imported key's public key differs from web_server_existing.key's"
say "$(openssl pkey -in web_server_imported_fake_PEM.key -text -noout | sed -n '1,4p' | paste -sd ';' | sed 's/;/; /g')"

# ============================================================================ generate

step "11. Generate path. The crypto user's credentials for the provider, then a key made in the HSMs"
export n3fips_password="$CLOUDHSM_CU_USER:$CLOUDHSM_CU_PASSWORD"
say "\$ export n3fips_password=$CLOUDHSM_CU_USER:<password>       (as AWS's guide; .cluster/env does it too)"
say "OPENSSL_CONF=$OPENSSL_CONF loads the cloudhsm provider, which makes RSA keys in the HSMs"
rm -f web_server_fake_PEM.key web_server.csr web_server.crt
run openssl genrsa -out web_server_fake_PEM.key 2048
grep -q '^-----BEGIN CLOUDHSM KEY REFERENCE-----' web_server_fake_PEM.key ||
    die "web_server_fake_PEM.key is not a fake PEM: was the key made in software? (openssl list -providers)"
run openssl pkey -in web_server_fake_PEM.key -text -noout
gen_handle="$(openssl pkey -in web_server_fake_PEM.key -text -noout | sed -n 's/^handle: //p')"
say "-> a 2048-bit key pair in the HSMs under handle $gen_handle; the file is only a reference:"
sed 's/^/    /' web_server_fake_PEM.key

step "12. A certificate signing request, signed by the HSM"
run openssl req -new -key web_server_fake_PEM.key -subj "/O=CloudHSM offload demo/CN=localhost" -out web_server.csr
say "checked by openssl without the provider (default provider only):"
run plain req -in web_server.csr -verify -noout -subject

step "13. A self-signed certificate for 365 days (SAN localhost, 127.0.0.1), signed by the HSM"
run openssl req -new -x509 -days 365 -key web_server_fake_PEM.key -subj "/O=CloudHSM offload demo/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -out web_server.crt
say "checked by openssl without the provider (default provider only):"
run plain verify -CAfile web_server.crt web_server.crt
run plain x509 -in web_server.crt -noout -subject -enddate -ext subjectAltName
plain x509 -in web_server.crt -pubkey -noout >web_server_cert.pub
openssl pkey -in web_server_fake_PEM.key -pubout >web_server_key.pub
cmp -s web_server_cert.pub web_server_key.pub || die "web_server.crt does not carry web_server_fake_PEM.key's public key"
say "the certificate carries the HSM key's public key"

step "14. An ECDSA certificate for 365 days (O=CloudHSM offload demo ECDSA P-256), signed by the HSM with EC key $ec_handle"
rm -f web_server_ec.crt
run openssl pkey -in web_server_ec_fake_PEM.key -text -noout
run openssl req -new -x509 -days 365 -key web_server_ec_fake_PEM.key \
    -subj "/O=CloudHSM offload demo ECDSA P-256/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -out web_server_ec.crt
say "checked by openssl without the provider (default provider only):"
run plain verify -CAfile web_server_ec.crt web_server_ec.crt
run plain x509 -in web_server_ec.crt -noout -subject -ext subjectAltName
plain x509 -in web_server_ec.crt -pubkey -noout >web_server_ec_cert.pub
openssl pkey -in web_server_ec_fake_PEM.key -pubout >web_server_ec_key.pub
cmp -s web_server_ec_cert.pub web_server_ec_key.pub ||
    die "web_server_ec.crt does not carry web_server_ec_fake_PEM.key's public key"
say "the certificate carries the HSM EC key's public key"
# The clients trust both self-signed certificates.
cat web_server.crt web_server_ec.crt >demo_certs.pem

step "15. cloudhsm_check: provider loaded, key readable, a test signature made by the cluster"
run cloudhsm_check web_server_fake_PEM.key
run cloudhsm_check web_server_imported_fake_PEM.key
run cloudhsm_check web_server_ec_fake_PEM.key

# ============================================================================ nginx

step "16. nginx with both HSM keys (web_server_fake_PEM.key, web_server_ec_fake_PEM.key): 2 workers, prefix $NGINX_PREFIX"
if [[ -n "${DEMO_PORT:-}" ]]; then
    port="$DEMO_PORT"
    [[ "$port" =~ ^[0-9]+$ ]] || die "DEMO_PORT=$port is not a port number"
    ! port_in_use "$port" || die "DEMO_PORT=$port is in use by another program"
else
    port=8443
    while port_in_use "$port"; do
        port=$((port + 1))
        ((port < 8543)) || die "no free port in 8443-8542 (set DEMO_PORT)"
    done
    [[ "$port" == 8443 ]] || say "port 8443 is in use; using $port"
fi
mkdir -p "$NGINX_PREFIX/logs" "$NGINX_PREFIX/tmp"
: >"$NGINX_LOG"
cat >"$NGINX_CONF" <<EOF
# Written by scripts/demo.sh. Start:  . $CLUSTER_DIR/env && $NGINX -c $NGINX_CONF -p $NGINX_PREFIX/ -e $NGINX_LOG
worker_processes 2;                  # each worker opens its own connections to the HSMs
pid $NGINX_PID;
error_log $NGINX_LOG info;

# The provider reads these in every process; list them so that workers started by a
# reload keep them (nginx clears the environment of its workers otherwise).
env OPENSSL_CONF;
env n3fips_password;
env CLOUDHSM_PIN;
env CLOUDHSM_CONFIG;

events { worker_connections 256; }

http {
    access_log $NGINX_PREFIX/logs/access.log;
    client_body_temp_path $NGINX_PREFIX/tmp/body;
    proxy_temp_path $NGINX_PREFIX/tmp/proxy;
    fastcgi_temp_path $NGINX_PREFIX/tmp/fastcgi;
    uwsgi_temp_path $NGINX_PREFIX/tmp/uwsgi;
    scgi_temp_path $NGINX_PREFIX/tmp/scgi;

    server {
        listen 127.0.0.1:$port ssl;
        server_name localhost;

        # Two certificates: libssl serves the one whose signature algorithms the client
        # offers (an ECDSA-capable client gets ECDSA). Both keys are fake PEMs: key handles.
        ssl_certificate     $DEMO_DIR/web_server.crt;
        ssl_certificate_key $DEMO_DIR/web_server_fake_PEM.key;
        ssl_certificate     $DEMO_DIR/web_server_ec.crt;
        ssl_certificate_key $DEMO_DIR/web_server_ec_fake_PEM.key;

        ssl_protocols TLSv1.2 TLSv1.3;
        # ECDHE-ECDSA and ECDHE-RSA: the HSM signs; AES128-GCM-SHA256 (RSA key exchange):
        # the HSM decrypts.
        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:AES128-GCM-SHA256;
        # Off so that every connection is a full handshake (one HSM operation each);
        # a real server keeps a cache: resumed handshakes need no HSM operation.
        ssl_session_cache off;
        ssl_session_tickets off;

        # The page is in the config: nginx's workers run as an unprivileged user, who may
        # not be allowed into this checkout (root's home, a private temp directory).
        location / { default_type text/plain; return 200 "hello from nginx; its TLS key never left the HSMs\\n"; }
    }
}
EOF
say "environment for nginx (from $CLUSTER_DIR/env): OPENSSL_CONF=$OPENSSL_CONF"
say "  CLOUDHSM_CONFIG=$CLOUDHSM_CONFIG n3fips_password=$CLOUDHSM_CU_USER:<password>"
run "$NGINX" -t -c "$NGINX_CONF" -p "$NGINX_PREFIX/" -e "$NGINX_LOG"
run "$NGINX" -c "$NGINX_CONF" -p "$NGINX_PREFIX/" -e "$NGINX_LOG"
deadline=$((SECONDS + 15))
until master="$(nginx_master)" && port_in_use "$port"; do
    if ((SECONDS >= deadline)); then
        tail -n 20 "$NGINX_LOG" | sed 's/^/    | /' >&2
        die "nginx did not start listening on 127.0.0.1:$port within 15s (its error log is above)"
    fi
    sleep 0.1
done
workers="$(pgrep -P "$master" -d ' ' || true)"
say "nginx master $master, worker processes: ${workers:-none}; listening on 127.0.0.1:$port"

# ============================================================================ requests

# node_ops: one line per node, "ID TOTAL SIGN DECRYPT ECDSA", from key_mgmt_util's getHSMInfo
# (nodes show their counters to logged-in sessions only).
node_ops() {
    local out
    out="$(printf 'loginHSM -u CU -s %s -p %s\ngetHSMInfo\nexit\n' "$CLOUDHSM_CU_USER" "$CLOUDHSM_CU_PASSWORD" |
        key_mgmt_util 2>&1)" || true
    printf '%s\n' "$out" | awk '
        /^Node id [0-9]+:/ { id = $3; sub(":", "", id) }
        /Private key operations:/ { t = $4; s = $6; d = $8; e = $11
                                     gsub(/[^0-9]/, "", s); gsub(/[^0-9]/, "", d); gsub(/[^0-9]/, "", e)
                                     print id, t, s, d, e; n++ }
        END { if (n == 0) exit 1 }' ||
        {
            printf '%s\n' "$out" | sed "s/$CLOUDHSM_CU_PASSWORD/<password>/g; s/^/    | /" >&2
            die "getHSMInfo printed no node statistics (above)"
        }
}

step "17. Private-key operations each node has served so far (key_mgmt_util getHSMInfo)"
before="$(node_ops)"
awk '{ printf "    node %s: %s (RSA sign %s, decrypt %s, ECDSA sign %s)\n", $1, $2, $3, $4, $5 }' <<<"$before"

# fetch LABEL KIND CONF CURL-ARGS...: GET the page with curl (no provider; OPENSSL_CONF is
# CONF, or /dev/null when CONF is empty), verifying the certificate against the two
# self-signed ones; show the protocol, the certificate served and the body, and check that
# the certificate is the KIND (RSA or ECDSA) one.
fetch() {
    local label=$1 kind=$2 conf=$3 out body tls subject
    shift 3
    printf '    $ %scurl --cacert demo_certs.pem %s https://localhost:%s/\n' "${conf:+OPENSSL_CONF=$conf }" "$*" "$port"
    out="$(OPENSSL_CONF="${conf:-/dev/null}" curl -sS -v --cacert demo_certs.pem "$@" "https://localhost:$port/" 2>&1)" ||
        { printf '%s\n' "$out" | sed 's/^/      /' >&2; die "curl ($label) failed (above)"; }
    tls="$(grep -m1 'SSL connection using' <<<"$out" | sed 's/^\* *//')"
    subject="$(grep -m1 '^\* *subject:' <<<"$out" | sed 's/^\* *subject: *//')"
    body="$(grep -v '^[*<>{}]' <<<"$out" | grep -v '^ *$' | tail -n1)"
    printf '      %s: %s\n      certificate: %s\n      %s\n' "$label" "$tls" "$subject" "$body"
    [[ "$body" == "hello from nginx"* ]] || die "curl ($label) did not get the page"
    if [[ "$kind" == ECDSA ]]; then
        [[ "$subject" == *"ECDSA P-256"* ]] || die "curl ($label) was served the RSA certificate, not the ECDSA one"
    else
        [[ "$subject" != *ECDSA* ]] || die "curl ($label) was served the ECDSA certificate, not the RSA one"
    fi
}

# A client that offers RSA signature algorithms only (curl has no option for it; OpenSSL
# reads it from the configuration).
cat >rsa_only_client.cnf <<EOF
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
SignatureAlgorithms = rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512
EOF

step "18. Fetch the page over TLS with each certificate; curl verifies it (--cacert demo_certs.pem: both certificates)"
fetch "TLS 1.3, ECDSA offered first (curl's default): ecdsa_secp256r1_sha256 signature by the HSM" ECDSA "" --tlsv1.3
say "rsa_only_client.cnf: SignatureAlgorithms = rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512"
fetch "TLS 1.3, RSA signature algorithms only: RSA-PSS signature by the HSM" RSA rsa_only_client.cnf --tlsv1.3
fetch "TLS 1.2 ECDHE-ECDSA (ECDSA signature by the HSM)" ECDSA "" \
    --tlsv1.2 --tls-max 1.2 --ciphers ECDHE-ECDSA-AES128-GCM-SHA256
fetch "TLS 1.2 ECDHE-RSA (RSA signature by the HSM)" RSA "" --tlsv1.2 --tls-max 1.2 --ciphers ECDHE-RSA-AES128-GCM-SHA256
fetch "TLS 1.2 RSA key exchange (premaster secret decrypted by the HSM)" RSA "" \
    --tlsv1.2 --tls-max 1.2 --ciphers AES128-GCM-SHA256

step "19. Private-key operations per node, before and after the five requests"
after="$(node_ops)"
join <(sort <<<"$before") <(sort <<<"$after") | sort -n | awk '
    { printf "    node %s: %4d -> %4d   (+%d: RSA sign +%d, decrypt +%d, ECDSA sign +%d)\n",
             $1, $2, $6, $6 - $2, $7 - $3, $8 - $4, $9 - $5
      total += $6 - $2; rsa += $7 - $3; dec += $8 - $4; ec += $9 - $5 }
    END { printf "    all nodes: +%d private-key operations for 5 full handshakes (RSA sign +%d, decrypt +%d, ECDSA sign +%d)\n",
                 total, rsa, dec, ec }'
read -r total rsa dec ec < <(join <(sort <<<"$before") <(sort <<<"$after") |
    awk '{ t += $6 - $2; r += $7 - $3; d += $8 - $4; e += $9 - $5 } END { print t + 0, r + 0, d + 0, e + 0 }')
((total >= 5 && rsa >= 2 && dec >= 1 && ec >= 2)) ||
    die "the nodes served RSA sign +$rsa, decrypt +$dec, ECDSA sign +$ec for 5 handshakes: expected at least +2, +1, +2"

step "Done. nginx is still running (master pid $master) with the HSM-held keys:"
cat <<EOF
    reach it:     curl --cacert $DEMO_DIR/demo_certs.pem https://localhost:$port/
    stop it:      $0 stop      (make stop-demo stops it and the cluster)
                  by hand: . $CLUSTER_DIR/env && $NGINX -c $NGINX_CONF -p $NGINX_PREFIX/ -e $NGINX_LOG -s quit
    its logs:     $NGINX_PREFIX/logs/
    the cluster:  . $CLUSTER_DIR/env && key_mgmt_util   (stop it with: make stop-cluster)
EOF
