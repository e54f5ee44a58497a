#!/usr/bin/env bash
# The import half of AWS's SSL/TLS offload walkthrough, against the local cluster that
# `scripts/cluster.sh start` (make cluster) runs. Safe to run again: every run makes a
# fresh software key and imports it under a new handle.
#
#   CLUSTER_DIR  the cluster's state directory (default .cluster)
#   DEMO_DIR     where the demo's files go (default .demo)
#   KMU_TIMEOUT  seconds to wait for each key_mgmt_util answer (default 60)
set -euo pipefail

CLUSTER_DIR="${CLUSTER_DIR:-.cluster}"
DEMO_DIR="${DEMO_DIR:-.demo}"
KMU_TIMEOUT="${KMU_TIMEOUT:-60}"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

[[ -f "$CLUSTER_DIR/env" ]] || die "$CLUSTER_DIR/env not found: start the cluster first (make cluster)"
# shellcheck source=/dev/null
. "$CLUSTER_DIR/env"
command -v key_mgmt_util >/dev/null || die "key_mgmt_util is not on PATH after sourcing $CLUSTER_DIR/env"
mkdir -p "$DEMO_DIR"
cd "$DEMO_DIR"

step "1. The cluster: $CLUSTER_DIR/cluster.cfg names these nodes (trust anchor: the cluster CA)"
grep -E '^(cluster_id|trust_anchor|node)' "$CLOUDHSM_CONFIG" | sed 's/^/    /'

step "2. An existing web server key made in software: openssl genrsa -out web_server_existing.key 2048"
# OPENSSL_CONF=/dev/null: plain OpenSSL, the key is made in software (the env file may
# point OPENSSL_CONF at the cloudhsm provider, which would make it in the HSMs).
OPENSSL_CONF=/dev/null openssl genrsa -out web_server_existing.key 2048 2>/dev/null
OPENSSL_CONF=/dev/null openssl pkey -in web_server_existing.key -pubout -out web_server_existing.pub
echo "    $(OPENSSL_CONF=/dev/null openssl pkey -in web_server_existing.key -noout -text 2>/dev/null | head -n1)"

# key_mgmt_util reads its commands from a FIFO and writes a transcript, so that the
# handles it prints can be fed back to it in the same session (the wrapping key is a
# session key and dies with the session).
rm -f kmu.fifo kmu.transcript
mkfifo kmu.fifo
key_mgmt_util <kmu.fifo >kmu.transcript 2>&1 &
KMU_PID=$!
exec 3>kmu.fifo
trap 'exec 3>&- 2>/dev/null; kill "$KMU_PID" 2>/dev/null || true; rm -f kmu.fifo' EXIT
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
nodes=$(grep -cE '^[[:space:]]*node[[:space:]]*=' "$CLOUDHSM_CONFIG")
expect "^Node id $((nodes - 1)) and err state"

step "4. A session-only AES-128 wrapping key (key type 31 = AES, 16 bytes)"
send "genSymKey -t 31 -s 16 -sess -l wrapping_key_for_import"
expect 'Symmetric Key Created\. +Key Handle: ([0-9]+)'
[[ "$MATCH" =~ Key\ Handle:\ ([0-9]+) ]]
wrap_handle=${BASH_REMATCH[1]}
echo "    -> wrapping key handle $wrap_handle"

step "5. Import the software key: it is wrapped with key $wrap_handle and unwrapped inside the HSMs"
send "importPrivateKey -f web_server_existing.key -l web_server_imported_key -w $wrap_handle"
expect 'Private Key Unwrapped\. +Key Handle: ([0-9]+)'
[[ "$MATCH" =~ Key\ Handle:\ ([0-9]+) ]]
key_handle=${BASH_REMATCH[1]}
echo "    -> private key handle $key_handle"

step "6. Write the fake PEM: a reference to handle $key_handle, no private key material"
send "getCaviumPrivKey -k $key_handle -out web_server_fake_PEM.key"
expect 'written to'

step "7. Node statistics (getHSMInfo), then exit"
send "getHSMInfo"
send "exit"
exec 3>&-
wait "$KMU_PID" || die "key_mgmt_util exited with status $?"
tail -n "+$((SHOWN + 1))" kmu.transcript | sed 's/^/    | /'

step "8. What the fake PEM holds"
sed 's/^/    /' web_server_fake_PEM.key
if OPENSSL_CONF=/dev/null openssl pkey -in web_server_fake_PEM.key -noout 2>/dev/null; then
    die "openssl loaded the fake PEM as a software key: it must not"
fi
echo "    openssl without the cloudhsm provider refuses it (as it must: it holds no key)."
OPENSSL_CONF=/dev/null openssl asn1parse -in web_server_fake_PEM.key -inform PEM 2>/dev/null | grep -E 'UTF8STRING|INTEGER' | head -n 4 |
    sed 's/^/    /'

step "Done. Files are in $DEMO_DIR; use the cluster yourself with:  . $CLUSTER_DIR/env && key_mgmt_util"
