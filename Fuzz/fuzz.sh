#!/usr/bin/env bash
# Builds the libFuzzer targets in Fuzz/Targets and runs them; `make fuzz` calls this.
#
#   Fuzz/fuzz.sh build            build every target (or FUZZ_TARGET's) into build/fuzz/bin
#   Fuzz/fuzz.sh run              build, then fuzz each target for FUZZ_SECONDS (default 60)
#   Fuzz/fuzz.sh list             the target names
#
# Each module under test is compiled once, whole, instrumented and with testing enabled;
# each target is a small file that does `@testable import` of it, exactly as a unit test
# does. So no source file is copied, edited or listed, `import` lines in the sources keep
# working, and names in a target can never collide with the module's internals.
#
# Each target runs on one core, one after the other. The working corpus (what libFuzzer
# adds) grows in Fuzz/work/corpus/<target>, crash inputs land in Fuzz/work/crashes/<target>,
# logs in Fuzz/work/logs; the seeds in Fuzz/corpus/<target> (from the unit tests, see
# `make fuzz-seeds`) are read, never written. A target stops at its first crash.
# The last line is the summary: `fuzz: N inputs over K targets, C crashes`; the exit
# status is non-zero when C > 0 or a target could not be built or run.

set -euo pipefail
cd "$(dirname "$0")/.."

SWIFTC=${SWIFTC:-swiftc}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_TARGET=${FUZZ_TARGET:-}
BUILD=${FUZZ_BUILD_DIR:-build/fuzz}
WORK=${FUZZ_WORK_DIR:-Fuzz/work}
# Extra libFuzzer flags, e.g. FUZZ_FLAGS="-max_len=65536" or "-only_ascii=1".
read -r -a EXTRA <<<"${FUZZ_FLAGS:-}"

# -O: the decoders run as they ship, bounds and overflow checks included (only -Ounchecked
# drops them), at 1.3 to 8 times the inputs per second of -Onone under ASan (8 for
# key_pem); -g keeps file and line in reports. lld: gold warns about every ASan symbol.
FLAGS=(-parse-as-library -sanitize=fuzzer,address "${FUZZ_OPT:--O}" -g)
if command -v ld.lld >/dev/null; then FLAGS+=(-use-ld=lld); fi

ALL_TARGETS=(frame request response peer_request peer_response key_pem key_der der base64 config store_uri)
# Whole modules, never a list of files: whatever a decoder comes to use is there. The
# config parser lives in HSMClient, which needs OpenSSLKit and so libssl and libcrypto;
# the cloudhsm: URI parser lives in the provider, which needs all three.
OPENSSL_LIBS=$(pkg-config --libs openssl 2>/dev/null || echo "-lssl -lcrypto")

die() { echo "fuzz: $*" >&2; exit 2; }

targets() {
    if [ -z "$FUZZ_TARGET" ]; then echo "${ALL_TARGETS[@]}"; return; fi
    local t
    for t in $FUZZ_TARGET; do
        [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || die "no target \`$t\` (targets: ${ALL_TARGETS[*]})"
    done
    echo "$FUZZ_TARGET"
}

# True when $1 is missing or older than any of the other files.
stale() {
    local out=$1 src
    shift
    [ -e "$out" ] || return 0
    for src in "$@"; do [ "$src" -nt "$out" ] && return 0; done
    return 1
}

# An instrumented module: its .swiftmodule and a static library in $BUILD/modules.
build_module() {
    local name=$1
    shift
    local lib=$BUILD/modules/lib$name.a
    stale "$lib" "$@" "$0" || return 0
    echo "fuzz: building module $name"
    "$SWIFTC" "${FLAGS[@]}" -enable-testing -module-name "$name" -I "$BUILD/modules" -I Sources/COpenSSL \
        -emit-module -emit-module-path "$BUILD/modules/$name.swiftmodule" \
        -emit-library -static -o "$lib" "$@"
}

build() {
    local rt
    rt=$("$SWIFTC" -print-target-info | sed -n 's/.*"runtimeResourcePath": "\(.*\)".*/\1/p')
    if ! ls "$rt"/../clang/*/lib/*/libclang_rt.fuzzer*.a >/dev/null 2>&1; then
        echo "fuzz: warning: no libFuzzer runtime found next to $SWIFTC; linking may fail" >&2
    fi
    mkdir -p "$BUILD/modules" "$BUILD/bin"
    build_module CloudHSMCore Sources/CloudHSMCore/*.swift
    local t
    for t in $(targets); do
        # Libraries in link order: a module before the modules it imports.
        local modules=(CloudHSMCore) libs=() deps=()
        if [ "$t" = config ] || [ "$t" = store_uri ]; then
            build_module OpenSSLKit Sources/OpenSSLKit/*.swift
            build_module HSMClient Sources/HSMClient/*.swift
            modules=(HSMClient OpenSSLKit CloudHSMCore)
        fi
        if [ "$t" = store_uri ]; then
            build_module CloudHSMProvider Sources/CloudHSMProvider/*.swift Sources/CloudHSMProvider/*/*.swift
            modules=(CloudHSMProvider "${modules[@]}")
        fi
        local m
        for m in "${modules[@]}"; do
            libs+=("-l$m")
            deps+=("$BUILD/modules/lib$m.a")
        done
        # shellcheck disable=SC2206 # OPENSSL_LIBS is a list of flags
        [ "$t" = config ] || [ "$t" = store_uri ] && libs+=($OPENSSL_LIBS)
        local out=$BUILD/bin/$t
        stale "$out" Fuzz/Targets/Support.swift "Fuzz/Targets/$t.swift" "${deps[@]}" "$0" || continue
        echo "fuzz: building target $t"
        "$SWIFTC" "${FLAGS[@]}" -module-name "fuzz_$t" -I "$BUILD/modules" -I Sources/COpenSSL \
            -L "$BUILD/modules" "${libs[@]}" Fuzz/Targets/Support.swift "Fuzz/Targets/$t.swift" -o "$out"
    done
}

count_files() { find "$1" -maxdepth 1 -type f 2>/dev/null | wc -l; }

run() {
    build
    [[ "$FUZZ_SECONDS" =~ ^[1-9][0-9]*$ ]] || die "FUZZ_SECONDS must be a whole number of seconds, found \`$FUZZ_SECONDS\`"
    mkdir -p "$WORK/logs"
    local total=0 ntargets=0 crashes=0 failed=0 t
    for t in $(targets); do
        local corpus=$WORK/corpus/$t crashdir=$WORK/crashes/$t log=$WORK/logs/$t.log
        mkdir -p "$corpus" "$crashdir" "Fuzz/corpus/$t"
        local dict=()
        [ -f "Fuzz/dict/$t.dict" ] && dict=(-dict="Fuzz/dict/$t.dict")
        local before rc=0 started
        before=$(count_files "$crashdir")
        started=$(date +%s%N)
        # SWIFT_BACKTRACE: Swift's own backtracer reads the stack under ASan's eyes and
        # buries the real report under a false one; libFuzzer's handler reports the trap.
        # Leak checks stay off: Swift's runtime keeps metadata caches alive for good, which
        # LeakSanitizer reports, and a leak is no memory-safety fault in Swift.
        # -timeout: no decoder may take seconds on a few kilobytes.
        SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} "$BUILD/bin/$t" \
            -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 -timeout=10 -detect_leaks=0 \
            -artifact_prefix="$crashdir/" \
            ${dict[@]+"${dict[@]}"} ${EXTRA[@]+"${EXTRA[@]}"} "$corpus" "Fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
        local execs new
        execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
        if [ -z "$execs" ]; then
            # No final statistics (killed): the last progress line's count.
            execs=$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' "$log" | tail -1)
        fi
        execs=${execs:-0}
        new=$(($(count_files "$crashdir") - before))
        total=$((total + execs))
        ntargets=$((ntargets + 1))
        local elapsed_ms=$((($(date +%s%N) - started) / 1000000 + 1))
        local rate=$((execs * 1000 / elapsed_ms))
        if [ "$new" -gt 0 ]; then
            crashes=$((crashes + new))
            echo "fuzz: $t: $execs inputs (~$rate/s), CRASH: $(ls -t "$crashdir" | head -1) in $crashdir (log: $log)"
            grep -m3 -E 'Fatal error|invariant broken|ERROR: AddressSanitizer|ERROR: libFuzzer' "$log" | sed 's/^/fuzz:   /' || true
        elif [ "$rc" -ne 0 ]; then
            failed=$((failed + 1))
            echo "fuzz: $t: exited with status $rc and no crash input (log: $log)"
            tail -5 "$log" | sed 's/^/fuzz:   /'
        else
            echo "fuzz: $t: $execs inputs (~$rate/s), corpus $(count_files "$corpus") grown + $(count_files "Fuzz/corpus/$t") seeds, no crash"
        fi
    done
    echo "fuzz: $total inputs over $ntargets targets, $crashes crashes"
    [ "$crashes" -eq 0 ] && [ "$failed" -eq 0 ]
}

case ${1:-run} in
build) build ;;
run) run ;;
list) echo "${ALL_TARGETS[@]}" ;;
*) die "usage: $0 [build|run|list]" ;;
esac
