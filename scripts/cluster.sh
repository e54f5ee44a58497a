#!/usr/bin/env bash
# Runs a local emulated CloudHSM cluster: one hsmd process per node on loopback.
#
#   scripts/cluster.sh start    create what is missing (CA, node certificates, node data,
#                               cluster.cfg, crypto user) and start nodes that are not running
#   scripts/cluster.sh stop     stop every node (TERM, then KILL after STOP_TIMEOUT seconds)
#   scripts/cluster.sh status   one line per node, and under each running node the counts
#                               its metrics show; exit status 3 when any node is down
#   scripts/cluster.sh pki      only the files nodes on separate hosts need: CA, node keys
#                               and certificates, cluster key, cluster.cfg (docs/deploy.md)
#
# Environment:
#   CLUSTER_DIR     state directory (default .cluster)
#   CLUSTER_HOSTS   the address of each node, an IP address or a DNS name (default
#                   127.0.0.1 for every node): node N listens on the Nth, its certificate
#                   names it (subjectAltName IP: or DNS:), and the peers and cluster.cfg use
#                   it. One address (for every node) or one per node; on one machine any
#                   127.x.y.z works, e.g. "127.0.0.2 127.0.0.3 127.0.0.4"
#   CLUSTER_PORTS   one port per node, or one for every node when the hosts differ
#                   (default "2223 2224 2225")
#                   CLUSTER_HOSTS and CLUSTER_PORTS are only used when the cluster is
#                   created; afterwards cluster.cfg is the source of truth
#   CLUSTER_ID      cluster id given to `hsmd init` (default local-dev)
#   BIN_DIR         directory holding hsmd, key_mgmt_util, cloudhsm_mgmt_util; else
#                   build/bin, else `swift build --show-bin-path`
#   HSMD, KMU, CMU  paths of the single executables (override BIN_DIR)
#   START_TIMEOUT   seconds to wait for a node's "listening on" line (default 30)
#   STOP_TIMEOUT    seconds between TERM and KILL (default 10)
#   CRYPTO_USER     name of the crypto user created on first start (default crypto_user)
#   HSMD_INIT_ARGS  extra arguments for `hsmd init`, HSMD_RUN_ARGS for `hsmd run`
#                   (e.g. HSMD_RUN_ARGS="--workers 2 --queue 16"; split on spaces)
#
# Nodes replicate token keys and users to each other: each `hsmd run` gets every other
# node as a --peer and --cluster-key $CLUSTER_DIR/cluster.key (32 random bytes made once,
# mode 0600, shared by all nodes; it seals every message between nodes). Pass
# --min-nodes etc. through HSMD_RUN_ARGS.
#
# Each node serves Prometheus metrics (hsmd --metrics-listen) on its own address and a
# port the kernel picks; `start` writes their URLs, one per line in node order, to
# $CLUSTER_DIR/metrics (and node N's to $CLUSTER_DIR/nodeN.metrics). HSMD_RUN_ARGS with a
# --metrics-listen of its own replaces that.
#
# After `start`, `. $CLUSTER_DIR/env` puts the tools on PATH and sets CLOUDHSM_CONFIG and
# n3fips_password for key_mgmt_util; when the provider is built (build/ossl-modules/
# cloudhsm.so) it also sets OPENSSL_CONF to $CLUSTER_DIR/openssl.cnf, which loads it.
set -euo pipefail

readonly SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"

CLUSTER_DIR="${CLUSTER_DIR:-.cluster}"
mkdir -p "$CLUSTER_DIR"
CLUSTER_DIR="$(cd "$CLUSTER_DIR" && pwd)"
readonly CLUSTER_DIR
readonly CLUSTER_ID="${CLUSTER_ID:-local-dev}"
readonly START_TIMEOUT="${START_TIMEOUT:-30}"
readonly STOP_TIMEOUT="${STOP_TIMEOUT:-10}"
readonly CRYPTO_USER="${CRYPTO_USER:-crypto_user}"
readonly CFG="$CLUSTER_DIR/cluster.cfg"
readonly CA_KEY="$CLUSTER_DIR/customerCA.key"
readonly CA_CRT="$CLUSTER_DIR/customerCA.crt"
readonly CO_PASSWORD_FILE="$CLUSTER_DIR/co_password"
readonly CU_PASSWORD_FILE="$CLUSTER_DIR/crypto_user_password"
readonly CLUSTER_KEY="$CLUSTER_DIR/cluster.key"
readonly ENV_FILE="$CLUSTER_DIR/env"
readonly METRICS_FILE="$CLUSTER_DIR/metrics"

log() { printf 'cluster: %s\n' "$*"; }
die() { printf 'cluster: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 2
}

# ---------------------------------------------------------------------------- binaries

find_binaries() {
    if [[ -z "${BIN_DIR:-}" ]]; then
        if [[ -x "$REPO_DIR/build/bin/hsmd" ]]; then
            BIN_DIR="$REPO_DIR/build/bin"
        else
            command -v swift >/dev/null || PATH="/opt/swift/usr/bin:$PATH"
            BIN_DIR="$(cd "$REPO_DIR" && swift build --show-bin-path)"
        fi
    fi
    BIN_DIR="$(cd "$BIN_DIR" && pwd)"
    HSMD="${HSMD:-$BIN_DIR/hsmd}"
    KMU="${KMU:-$BIN_DIR/key_mgmt_util}"
    CMU="${CMU:-$BIN_DIR/cloudhsm_mgmt_util}"
    local b
    for b in "$HSMD" "$KMU" "$CMU"; do
        [[ -x "$b" ]] || die "$b is not an executable (run \`make build\`, or set BIN_DIR)"
    done
}

# ---------------------------------------------------------------------------- nodes

# Addresses: from cluster.cfg once it exists, else from CLUSTER_HOSTS and CLUSTER_PORTS.
# HOSTS[n] is node n's address without brackets, PORTS[n] its port.
load_nodes() {
    HOSTS=()
    PORTS=()
    if [[ -f "$CFG" ]]; then
        local line address
        while read -r line; do
            address="${line##* }"
            HOSTS+=("$(strip_brackets "${address%:*}")")
            PORTS+=("${address##*:}")
        done < <(grep -E '^[[:space:]]*node[[:space:]]*=' "$CFG" | sed 's/[[:space:]]*$//' | sort -t= -k2 -n)
        [[ ${#PORTS[@]} -gt 0 ]] || die "$CFG names no nodes"
        if [[ -n "${CLUSTER_PORTS:-}" && "$(echo $CLUSTER_PORTS)" != "${PORTS[*]}" ]]; then
            log "note: CLUSTER_PORTS=\"$CLUSTER_PORTS\" ignored; $CFG uses \"${PORTS[*]}\" (remove $CLUSTER_DIR to change)"
        fi
        if [[ -n "${CLUSTER_HOSTS:-}" && "$(echo $CLUSTER_HOSTS)" != "${HOSTS[*]}" ]]; then
            log "note: CLUSTER_HOSTS=\"$CLUSTER_HOSTS\" ignored; $CFG uses \"${HOSTS[*]}\" (remove $CLUSTER_DIR to change)"
        fi
        return 0
    fi
    local hosts=() ports=() h p n count
    read -r -a hosts <<<"${CLUSTER_HOSTS:-127.0.0.1}"
    read -r -a ports <<<"${CLUSTER_PORTS:-2223 2224 2225}"
    [[ ${#hosts[@]} -ge 1 ]] || hosts=(127.0.0.1)
    [[ ${#ports[@]} -ge 1 ]] || die "CLUSTER_PORTS names no port"
    count=${#ports[@]}
    ((${#hosts[@]} > count)) && count=${#hosts[@]}
    if [[ ${#hosts[@]} -ne 1 && ${#hosts[@]} -ne $count ]] || [[ ${#ports[@]} -ne 1 && ${#ports[@]} -ne $count ]]; then
        die "CLUSTER_HOSTS names ${#hosts[@]} address(es) and CLUSTER_PORTS ${#ports[@]} port(s): give one per node, or one for every node"
    fi
    ((count <= 16)) || die "a cluster has 1 to 16 nodes; CLUSTER_HOSTS/CLUSTER_PORTS name $count"
    for p in "${ports[@]}"; do
        [[ "$p" =~ ^[0-9]+$ && "$p" -ge 1 && "$p" -le 65535 ]] || die "bad port '$p' in CLUSTER_PORTS"
    done
    for h in "${hosts[@]}"; do
        h="$(strip_brackets "$h")"
        host_kind "$h" >/dev/null ||
            die "bad address '$h' in CLUSTER_HOSTS: an IPv4 or IPv6 address or a DNS name"
    done
    for ((n = 0; n < count; n++)); do
        HOSTS+=("$(strip_brackets "${hosts[$((${#hosts[@]} == 1 ? 0 : n))]}")")
        PORTS+=("${ports[$((${#ports[@]} == 1 ? 0 : n))]}")
    done
    local seen=" " address
    for n in "${!PORTS[@]}"; do
        address="$(node_address "$n")"
        [[ "$seen" != *" $address "* ]] || die "two nodes would listen on $address (CLUSTER_HOSTS, CLUSTER_PORTS)"
        seen+="$address "
    done
}

strip_brackets() {
    local h=$1
    [[ "$h" == \[*\] ]] && h="${h:1:${#h}-2}"
    echo "$h"
}

# "ip" for an IPv4 or IPv6 address, "dns" for a host name; fails for anything else.
host_kind() {
    local h=$1
    if [[ "$h" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ || ("$h" == *:* && "$h" =~ ^[0-9A-Fa-f:.]+$) ]]; then
        echo ip
    elif [[ "$h" =~ ^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$ && ${#h} -le 253 ]]; then
        echo dns
    else
        return 1
    fi
}

# HOST:PORT of node n as hsmd and cluster.cfg write it ([ADDRESS]:PORT for IPv6).
node_address() {
    local h=${HOSTS[$1]}
    [[ "$h" == *:* ]] && h="[$h]"
    echo "$h:${PORTS[$1]}"
}

pid_file() { echo "$CLUSTER_DIR/node$1.pid"; }
log_file() { echo "$CLUSTER_DIR/node$1.log"; }
metrics_url_file() { echo "$CLUSTER_DIR/node$1.metrics"; }

# Prints the node's pid when it runs hsmd (a zombie or a recycled pid does not count).
node_pid() {
    local f pid state
    f="$(pid_file "$1")"
    [[ -f "$f" ]] || return 1
    pid="$(<"$f")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/stat" ]] || return 1
    # Field 3 of /proc/PID/stat is the state; the command name before it may hold spaces.
    state="$(sed 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f1)"
    [[ "$state" != Z && "$state" != X ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == hsmd ]] || return 1
    echo "$pid"
}

# True while the process runs (a zombie does not), whatever its name.
process_running() {
    local state
    [[ -r "/proc/$1/stat" ]] || return 1
    state="$(sed 's/^.*) //' "/proc/$1/stat" | cut -d' ' -f1)"
    [[ "$state" != Z && "$state" != X ]]
}

# ---------------------------------------------------------------------------- PKI

# Plain OpenSSL, whatever the caller's shell has sourced: with a cluster's OPENSSL_CONF
# the CA and node keys would be made in that cluster's HSMs (or fail when it is gone).
plain_openssl() { OPENSSL_CONF=/dev/null openssl "$@"; }

openssl_quiet() {
    local out
    if ! out="$(plain_openssl "$@" 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "openssl $1 failed"
    fi
}

make_ca() {
    [[ -f "$CA_KEY" && -f "$CA_CRT" ]] && return 0
    log "creating the cluster CA ($CA_CRT, RSA 2048, 10 years)"
    local cnf="$CLUSTER_DIR/pki/ca.cnf"
    mkdir -p "$CLUSTER_DIR/pki"
    cat >"$cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
O = CloudHSM offload (local dev)
CN = customerCA local-dev
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
    (umask 077 && openssl_quiet genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$CA_KEY.tmp")
    openssl_quiet req -new -x509 -config "$cnf" -key "$CA_KEY.tmp" -days 3650 -sha256 -out "$CA_CRT.tmp"
    mv "$CA_KEY.tmp" "$CA_KEY"
    mv "$CA_CRT.tmp" "$CA_CRT"
}

# The name clients and peers check: IP:<address> or DNS:<name>; 127.0.0.1 keeps the
# localhost name it always had.
node_san() {
    local h=${HOSTS[$1]}
    case "$(host_kind "$h")" in
    ip) [[ "$h" == 127.0.0.1 ]] && echo "IP:127.0.0.1, DNS:localhost" || echo "IP:$h" ;;
    *) echo "DNS:$h" ;;
    esac
}

make_node_cert() {
    local n=$1 key="$CLUSTER_DIR/node$1.key" crt="$CLUSTER_DIR/node$1.crt"
    [[ -f "$key" && -f "$crt" ]] && return 0
    local san
    san="$(node_san "$n")"
    log "creating node $n's key and certificate (CN hsm-node-$n, $san, signed by the CA)"
    local ext="$CLUSTER_DIR/pki/node$n.ext"
    cat >"$ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    (umask 077 && openssl_quiet genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$key.tmp")
    openssl_quiet req -new -key "$key.tmp" -subj "/O=CloudHSM offload (local dev)/CN=hsm-node-$n" \
        -out "$CLUSTER_DIR/pki/node$n.csr"
    openssl_quiet x509 -req -in "$CLUSTER_DIR/pki/node$n.csr" -CA "$CA_CRT" -CAkey "$CA_KEY" \
        -CAcreateserial -CAserial "$CLUSTER_DIR/pki/ca.srl" -days 3650 -sha256 -extfile "$ext" -out "$crt.tmp"
    mv "$key.tmp" "$key"
    mv "$crt.tmp" "$crt"
}

# The cluster key: made once, the same file for every node (hsmd reads it at each start).
make_cluster_key() {
    [[ -s "$CLUSTER_KEY" ]] && return 0
    log "creating the cluster key $CLUSTER_KEY (seals records between nodes)"
    (umask 077 && openssl_quiet rand -out "$CLUSTER_KEY.tmp" 32)
    mv "$CLUSTER_KEY.tmp" "$CLUSTER_KEY"
}

# ---------------------------------------------------------------------------- set-up

random_password() { plain_openssl rand -hex 12; }

init_nodes() {
    if [[ ! -s "$CO_PASSWORD_FILE" ]]; then
        (umask 077 && random_password >"$CO_PASSWORD_FILE")
    fi
    chmod 600 "$CO_PASSWORD_FILE"
    local n out
    for n in "${!PORTS[@]}"; do
        [[ -f "$CLUSTER_DIR/node$n/master.key" ]] && continue
        [[ -e "$CLUSTER_DIR/node$n" ]] &&
            die "$CLUSTER_DIR/node$n exists but has no master.key: a failed init? remove it and start again"
        log "initialising node $n (hsmd init, data in $CLUSTER_DIR/node$n)"
        # The password goes by file, never on the command line, where ps shows it.
        if ! out="$("$HSMD" init --data-dir "$CLUSTER_DIR/node$n" --node-id "$n" \
            --cluster-id "$CLUSTER_ID" --co-password-file "$CO_PASSWORD_FILE" ${HSMD_INIT_ARGS:-} 2>&1)"; then
            printf '%s\n' "$out" >&2
            die "hsmd init failed for node $n"
        fi
    done
}

write_config() {
    [[ -f "$CFG" ]] && return 0
    log "writing $CFG"
    {
        echo "# Local dev cluster written by scripts/cluster.sh. Relative paths are relative to this file."
        echo "cluster_id = $CLUSTER_ID"
        echo "trust_anchor = customerCA.crt"
        local n
        for n in "${!PORTS[@]}"; do
            echo "node = $n $(node_address "$n")"
        done
        echo "connect_timeout_ms = 3000"
        echo "operation_timeout_ms = 15000"
    } >"$CFG.tmp"
    mv "$CFG.tmp" "$CFG"
}

start_node() {
    local n=$1 address logf pidf offset pid
    address="$(node_address "$n")"
    logf="$(log_file "$n")"
    pidf="$(pid_file "$n")"
    # The log names client addresses: owner and group only (logs of older clusters were 0644).
    (umask 027 && touch "$logf")
    chmod 640 "$logf"
    printf -- '--- %s: starting hsmd node %s on %s\n' "$(date -u +%FT%TZ)" "$n" "$address" >>"$logf"
    offset=$(($(stat -c %s "$logf") + 1))
    # setsid + nohup: the node outlives make and the terminal; stdin from /dev/null.
    # --log-file: hsmd appends its log (and its stderr, so a crash backtrace) to the file
    # itself and reopens it on SIGHUP; the redirection catches only what comes before
    # (stdout's "listening on" line, and a refusal to start).
    local peers=() m
    for m in "${!PORTS[@]}"; do
        [[ "$m" == "$n" ]] || peers+=(--peer "$m=$(node_address "$m")")
    done
    if [[ ${#peers[@]} -gt 0 ]]; then peers+=(--cluster-key "$CLUSTER_KEY"); fi
    # Metrics on the node's own address, on a port the kernel picks (wait_for_node reads it).
    local metrics=()
    [[ " ${HSMD_RUN_ARGS:-} " == *" --metrics-listen "* ]] || metrics=(--metrics-listen "${address%:*}:0")
    rm -f "$(metrics_url_file "$n")"
    setsid nohup "$HSMD" run --data-dir "$CLUSTER_DIR/node$n" --listen "$address" \
        --cert "$CLUSTER_DIR/node$n.crt" --key "$CLUSTER_DIR/node$n.key" --ca "$CA_CRT" --log-file "$logf" \
        "${peers[@]+"${peers[@]}"}" "${metrics[@]+"${metrics[@]}"}" ${HSMD_RUN_ARGS:-} \
        </dev/null >>"$logf" 2>&1 &
    pid=$!
    echo "$pid" >"$pidf"
    STARTED+=("$n:$pid:$offset")
}

wait_for_node() {
    local n=$1 pid=$2 offset=$3 logf deadline
    logf="$(log_file "$n")"
    deadline=$((SECONDS + START_TIMEOUT))
    while :; do
        if tail -c "+$offset" "$logf" | grep -q "hsmd node $n listening on"; then
            log "node $n is listening on $(node_address "$n") (pid $pid, log $logf)"
            # hsmd prints the metrics line before the listening line.
            local url
            url="$(tail -c "+$offset" "$logf" | sed -n "s|^hsmd node $n metrics on \(http://[^ ]*\)\$|\1|p" | tail -n 1)"
            if [[ -n "$url" ]]; then
                echo "$url" >"$(metrics_url_file "$n").tmp"
                mv "$(metrics_url_file "$n").tmp" "$(metrics_url_file "$n")"
                log "node $n serves metrics at $url"
            fi
            return 0
        fi
        # Until setsid and nohup have exec'd hsmd the process has another name: only a
        # process that is gone (or a zombie) has exited.
        if ! node_pid "$n" >/dev/null && ! process_running "$pid"; then
            rm -f "$(pid_file "$n")"
            printf 'cluster: node %s exited during start-up; last lines of %s:\n' "$n" "$logf" >&2
            tail -n 20 "$logf" | sed 's/^/    /' >&2
            return 1
        fi
        if ((SECONDS >= deadline)); then
            printf 'cluster: node %s did not print "hsmd node %s listening on" within %ss; last lines of %s:\n' \
                "$n" "$n" "$START_TIMEOUT" "$logf" >&2
            tail -n 20 "$logf" | sed 's/^/    /' >&2
            return 1
        fi
        sleep 0.1
    done
}

# $METRICS_FILE: the metrics URL of every running node, one per line, in node order.
write_metrics_list() {
    local n f
    {
        for n in "${!PORTS[@]}"; do
            f="$(metrics_url_file "$n")"
            if node_pid "$n" >/dev/null && [[ -s "$f" ]]; then cat "$f"; fi
        done
    } >"$METRICS_FILE.tmp"
    mv "$METRICS_FILE.tmp" "$METRICS_FILE"
}

create_crypto_user() {
    [[ -s "$CU_PASSWORD_FILE" ]] && return 0
    local co_pw cu_pw out count=${#PORTS[@]} ok
    co_pw="$(<"$CO_PASSWORD_FILE")"
    cu_pw="$(random_password)"
    log "creating crypto user $CRYPTO_USER with cloudhsm_mgmt_util"
    out="$(printf 'loginHSM CO admin %s\ncreateUser CU %s %s\nlogoutHSM\nquit\n' "$co_pw" "$CRYPTO_USER" "$cu_pw" |
        CLOUDHSM_CONFIG="$CFG" "$CMU" 2>&1)" || true
    ok=1
    [[ "$(grep -c 'loginHSM success on server' <<<"$out" || true)" -eq "$count" ]] || ok=0
    [[ "$(grep -c 'createUser success on server' <<<"$out" || true)" -eq "$count" ]] || ok=0
    if [[ $ok -ne 1 ]]; then
        printf '%s\n' "$out" | sed "s/$co_pw/<co password>/g; s/$cu_pw/<cu password>/g; s/^/    /" >&2
        die "creating the crypto user did not succeed on all $count nodes (output above)"
    fi
    (umask 077 && echo "$cu_pw" >"$CU_PASSWORD_FILE")
}

# The OpenSSL provider, when it is built: an openssl.cnf for this cluster (provider.cnf
# with the module and cluster_config lines filled in).
write_openssl_conf() {
    OPENSSL_CNF=""
    local module=""
    if [[ -f "$REPO_DIR/build/ossl-modules/cloudhsm.so" ]]; then
        module="$(cd "$REPO_DIR/build/ossl-modules" && pwd)/cloudhsm.so"
    elif [[ -f "$BIN_DIR/libcloudhsm.so" ]]; then
        module="$BIN_DIR/libcloudhsm.so"
    fi
    [[ -n "$module" && -f "$REPO_DIR/provider.cnf" ]] || return 0
    OPENSSL_CNF="$CLUSTER_DIR/openssl.cnf"
    sed -e "s|^# *module = .*|module = $module|" -e "s|^cluster_config = .*|cluster_config = $CFG|" \
        "$REPO_DIR/provider.cnf" >"$OPENSSL_CNF.tmp"
    mv "$OPENSSL_CNF.tmp" "$OPENSSL_CNF"
}

write_env() {
    local cu_pw
    cu_pw="$(<"$CU_PASSWORD_FILE")"
    write_openssl_conf
    (
        umask 077
        {
            echo "# Source me: . $ENV_FILE"
            printf 'export PATH=%q:"$PATH"\n' "$BIN_DIR"
            printf 'export CLOUDHSM_CONFIG=%q\n' "$CFG"
            printf 'export n3fips_password=%q\n' "$CRYPTO_USER:$cu_pw"
            printf 'export CLOUDHSM_CU_USER=%q\n' "$CRYPTO_USER"
            printf 'export CLOUDHSM_CU_PASSWORD=%q\n' "$cu_pw"
            if [[ -n "$OPENSSL_CNF" ]]; then
                echo "# openssl and every libssl program load the cloudhsm provider (OPENSSL_CONF=/dev/null: without it)"
                printf 'export OPENSSL_CONF=%q\n' "$OPENSSL_CNF"
            fi
        } >"$ENV_FILE.tmp"
    )
    mv "$ENV_FILE.tmp" "$ENV_FILE"
}

# ---------------------------------------------------------------------------- commands

cmd_start() {
    find_binaries
    command -v openssl >/dev/null || die "openssl is not installed (make deps)"
    load_nodes
    make_ca
    local n
    for n in "${!PORTS[@]}"; do make_node_cert "$n"; done
    make_cluster_key
    init_nodes
    write_config

    STARTED=()
    for n in "${!PORTS[@]}"; do
        if pid="$(node_pid "$n")"; then
            log "node $n already running (pid $pid)"
        else
            start_node "$n"
        fi
    done
    local entry failed=0
    for entry in "${STARTED[@]+"${STARTED[@]}"}"; do
        IFS=: read -r n pid offset <<<"$entry"
        wait_for_node "$n" "$pid" "$offset" || failed=1
    done
    write_metrics_list
    [[ $failed -eq 0 ]] || die "some nodes did not start (see above); \`$0 stop\` stops the others"

    create_crypto_user
    write_env
    log "cluster ready: ${#PORTS[@]} nodes; use it with:  . $ENV_FILE"
}

# For nodes on separate hosts: everything `start` makes before it initialises and starts
# nodes, so it can be copied to each host (docs/deploy.md). Runs no node; safe to repeat.
cmd_pki() {
    command -v openssl >/dev/null || die "openssl is not installed (make deps)"
    load_nodes
    make_ca
    local n
    for n in "${!PORTS[@]}"; do make_node_cert "$n"; done
    make_cluster_key
    write_config
    log "node files in $CLUSTER_DIR: customerCA.crt (every node and client), nodeN.crt and nodeN.key (node N),"
    log "  cluster.key (every node, mode 0600), cluster.cfg (clients); keep customerCA.key off the nodes"
}

cmd_stop() {
    local f n pid deadline pending=()
    shopt -s nullglob
    for f in "$CLUSTER_DIR"/node*.pid; do
        n="${f##*/node}"
        n="${n%.pid}"
        if pid="$(node_pid "$n")"; then
            kill -TERM "$pid" 2>/dev/null || true
            pending+=("$n:$pid")
        else
            rm -f "$f"
        fi
    done
    deadline=$((SECONDS + STOP_TIMEOUT))
    local entry
    for entry in "${pending[@]+"${pending[@]}"}"; do
        IFS=: read -r n pid <<<"$entry"
        while node_pid "$n" >/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        if node_pid "$n" >/dev/null; then
            log "node $n (pid $pid) ignored TERM for ${STOP_TIMEOUT}s; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$(pid_file "$n")" "$(metrics_url_file "$n")"
        log "node $n stopped"
    done
    if [[ -f "$METRICS_FILE" ]]; then
        load_nodes
        write_metrics_list
    fi
    [[ ${#pending[@]} -gt 0 ]] || log "no node was running"
}

# One line from a node's metrics: its private-key operations, throttled answers,
# connections and keys.
metrics_summary() {
    local url=$1 text
    if ! command -v curl >/dev/null; then
        echo "    metrics: $url (curl is not installed: make deps)"
        return 0
    fi
    if ! text="$(curl -sS --fail --max-time 5 "$url" 2>&1)"; then
        echo "    metrics: $url does not answer: ${text##*curl: }"
        return 0
    fi
    awk -v url="$url" '
        function label(name,   v) { v = $0; if (!sub(".*" name "=\"", "", v)) return ""; sub(/".*/, "", v); return v }
        /^#/ { next }
        {
            name = $1; sub(/\{.*/, "", name); value = $NF + 0
            if (name == "hsmd_private_key_operations_total") {
                if (label("outcome") == "success") ok[label("operation")] += value; else failed += value
            } else if (name == "hsmd_throttled_responses_total") throttled += value
            else if (name == "hsmd_connections") connections[label("state")] = value
            else if (name == "hsmd_keys") keys[label("kind")] = value
            else if (name == "hsmd_logins_total" && label("outcome") != "success") loginFailures += value
        }
        END {
            printf "    operations: rsa_sign %d, rsa_decrypt %d, ecdsa_sign %d, failed %d; throttled %d; failed logins %d\n",
                ok["rsa_sign"], ok["rsa_decrypt"], ok["ecdsa_sign"], failed, throttled, loginFailures
            printf "    connections: %d logged in, %d not logged in, %d peer; keys: %d token, %d session; %s\n",
                connections["logged_in"], connections["unauthenticated"], connections["peer"], keys["token"],
                keys["session"], url
        }' <<<"$text"
}

cmd_status() {
    load_nodes
    local n pid down=0 f
    for n in "${!PORTS[@]}"; do
        if pid="$(node_pid "$n")"; then
            echo "node $n $(node_address "$n") running (pid $pid)"
            f="$(metrics_url_file "$n")"
            if [[ -s "$f" ]]; then metrics_summary "$(<"$f")"; fi
        else
            echo "node $n $(node_address "$n") stopped"
            down=1
        fi
    done
    [[ $down -eq 0 ]] || return 3
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
pki) cmd_pki ;;
*) usage ;;
esac
