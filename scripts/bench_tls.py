#!/usr/bin/env python3
"""Full-handshake throughput of nginx with its key in the HSM cluster versus the same
key as a plain key file, measured side by side in one run, for an RSA-2048 key and an
ECDSA P-256 key.

For each key type an existing software key is imported with key_mgmt_util (the
walkthrough's import path); nginx A uses the key file itself, nginx B the fake PEM from
getCaviumPrivKey, same certificate, same settings: worker_processes 2, keepalive_timeout
0, session cache and tickets off, a tiny static page. wrk -t2 -c32 -d<duration> -H
'Connection: close' alternates between the two for TLS 1.3 and TLS 1.2 (ECDHE-RSA or
ECDHE-ECDSA); the ratio of the medians is what counts, since absolute numbers drift on a
shared machine. An ECDSA signature costs about a tenth of an RSA one, so the channel's own
cost shows in its ratio first.

    BIN_DIR=... MODULE=.../cloudhsm.so scripts/bench_tls.py [--rounds 3] [--duration 10] [--keys rsa,ecdsa]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from benchlib import free_ports, kmu_import, node_operations, run  # noqa: E402


NGINX_CONF = """
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
env n3fips_password;
env CLOUDHSM_CONFIG;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_timeout 0;
    ssl_session_cache off;
    ssl_session_tickets off;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    server {{
        listen 127.0.0.1:{port13} ssl;
        ssl_protocols TLSv1.3;
        location / {{ return 200 "ok\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{port12} ssl;
        ssl_protocols TLSv1.2;
        ssl_ciphers {tls12_cipher};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


@dataclass(frozen=True)
class KeyType:
    """A key the benchmark serves: how plain OpenSSL makes it, and its TLS 1.2 suite."""

    option: str  # --keys
    name: str
    make: tuple[str, ...]  # openssl arguments writing the key to {out}
    tls12_cipher: str

    @property
    def modes(self) -> tuple[str, str]:
        return "TLS 1.3", f"TLS 1.2 {self.tls12_cipher.rsplit('-', 3)[0]}"


KEY_TYPES = [
    KeyType("rsa", "RSA 2048", ("genrsa", "-out", "{out}", "2048"), "ECDHE-RSA-AES128-GCM-SHA256"),
    KeyType("ecdsa", "ECDSA P-256", ("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                                     "-out", "{out}"), "ECDHE-ECDSA-AES128-GCM-SHA256"),
]


def start_nginx(name: str, work: Path, key: Path, cert: Path, env: dict, key_type: KeyType) -> dict:
    d = work / f"nginx-{name}"
    (d / "tmp").mkdir(parents=True, exist_ok=True)
    port13, port12 = free_ports(2)
    conf = d / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=d, cert=cert, key=key, port13=port13, port12=port12,
                                      tls12_cipher=key_type.tls12_cipher))
    run(["nginx", "-c", str(conf), "-p", str(d)], env=env)
    for _ in range(100):
        if (d / "nginx.pid").exists():
            break
        time.sleep(0.05)
    return {"dir": d, "conf": conf, key_type.modes[0]: port13, key_type.modes[1]: port12}


def stop_nginx(server: dict):
    pid_file = server["dir"] / "nginx.pid"
    if pid_file.exists():
        os.kill(int(pid_file.read_text()), signal.SIGQUIT)


def wrk(port: int, duration: int) -> tuple[float, str]:
    out = run(["wrk", "-t2", "-c32", f"-d{duration}s", "-H", "Connection: close", f"https://127.0.0.1:{port}/"])
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    problems = " ".join(m.group(0) for m in re.finditer(r"(Non-2xx or 3xx responses: \d+|Socket errors: [^\n]+)", out))
    return rate, problems


PLAIN, HSM = "plain key file", "HSM (fake PEM)"


def bench_key_type(key_type: KeyType, work: Path, env: dict, plain_env: dict, args) -> tuple[dict, dict]:
    """One key of this type as a plain file and imported into the HSMs, nginx on each, wrk
    alternating between them. Answers the rates per mode and variant, and the private-key
    operations each node served."""
    key_file = f"plain-{key_type.option}.key"
    run(["openssl", *(arg.format(out=work / key_file) for arg in key_type.make)], env=plain_env)
    cert = work / f"cert-{key_type.option}.pem"
    run(["openssl", "req", "-new", "-x509", "-key", str(work / key_file), "-subj", "/CN=localhost", "-days", "2",
         "-out", str(cert)], env=plain_env)
    fake = kmu_import(env, work, key=key_file, fake=f"fake-{key_type.option}.pem", label=f"bench_{key_type.option}")
    print(f"bench: {key_type.name}: imported the key; nginx A uses {key_file}, nginx B the fake PEM", flush=True)
    servers = {
        PLAIN: start_nginx(f"plain-{key_type.option}", work, work / key_file, cert, plain_env, key_type),
        HSM: start_nginx(f"hsm-{key_type.option}", work, fake, cert, env, key_type),
    }
    try:
        ops_before = node_operations(env)
        results: dict[str, dict[str, list[float]]] = {
            f"{key_type.name} {m}": {v: [] for v in servers} for m in key_type.modes}
        for round_ in range(1, args.rounds + 1):
            for mode in key_type.modes:
                order = list(servers) if round_ % 2 else list(reversed(servers))
                for variant in order:
                    rate, problems = wrk(servers[variant][mode], args.duration)
                    results[f"{key_type.name} {mode}"][variant].append(rate)
                    print(f"round {round_}  {key_type.name:12} {mode:20} {variant:16} {rate:8.1f} handshakes/s "
                          f"{problems}", flush=True)
        ops_after = node_operations(env)
    finally:
        for server in servers.values():
            stop_nginx(server)
    return results, {n: ops_after.get(n, 0) - ops_before.get(n, 0) for n in ops_after}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--dir", default=str(REPO / ".bench"))
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--keys", default=",".join(k.option for k in KEY_TYPES),
                        help="key types to serve, comma-separated (default: %(default)s)")
    args = parser.parse_args()
    chosen = [o.strip() for o in args.keys.split(",") if o.strip()]
    unknown = [o for o in chosen if o not in {k.option for k in KEY_TYPES}]
    if unknown or not chosen:
        parser.error(f"--keys: unknown key type {', '.join(unknown) or '(none)'}; "
                     f"choose from {', '.join(k.option for k in KEY_TYPES)}")
    key_types = [k for k in KEY_TYPES if k.option in chosen]
    for tool in ("nginx", "wrk", "openssl"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"bench: {tool} not found (make deps installs it)")

    bench = Path(args.dir).resolve()
    shutil.rmtree(bench, ignore_errors=True)
    work = bench / "work"
    work.mkdir(parents=True)
    env = dict(os.environ)
    env["PATH"] = f"{env.get('BIN_DIR', REPO / 'build' / 'bin')}:/usr/sbin:{env.get('PATH', '')}"
    cluster_env = dict(env, CLUSTER_DIR=str(bench / "cluster"), CLUSTER_PORTS=" ".join(map(str, free_ports(3))))
    print("bench: starting a 3-node cluster in", bench / "cluster", flush=True)
    run([str(REPO / "scripts" / "cluster.sh"), "start"], env=cluster_env)
    try:
        text = (bench / "cluster" / "env").read_text()
        for name, value in re.findall(r"^export (\w+)=(.*)$", text, re.M):
            if name != "PATH":  # already set above, and written for a shell to expand
                env[name] = shlex.split(value)[0] if value else ""
        if os.environ.get("MODULE"):
            conf = (bench / "cluster" / "openssl.cnf")
            conf.write_text(re.sub(r"^module = .*$", f"module = {os.environ['MODULE']}", conf.read_text(), flags=re.M))
        plain_env = dict(env, OPENSSL_CONF="/dev/null")
        results: dict[str, dict[str, list[float]]] = {}
        served: dict[str, dict[int, int]] = {}
        for key_type in key_types:
            results_of_type, served[key_type.name] = bench_key_type(key_type, work, env, plain_env, args)
            results.update(results_of_type)
        print()
        print(f"{'mode':34} {'plain key (median)':>20} {'HSM (median)':>14} {'ratio HSM/plain':>16}")
        summary = {}
        for mode, variants in results.items():
            plain = statistics.median(variants[PLAIN])
            hsm = statistics.median(variants[HSM])
            summary[mode] = {"plain": variants[PLAIN], "hsm": variants[HSM], "ratio": hsm / plain}
            print(f"{mode:34} {plain:20.1f} {hsm:14.1f} {hsm / plain:16.3f}")
        for name, ops in served.items():
            total = sum(ops.values()) or 1
            print(f"{name} private-key operations per node during the HSM runs: "
                  + ", ".join(f"node {n}: {c} ({100 * c / total:.0f}%)" for n, c in sorted(ops.items())))
        if args.json:
            Path(args.json).write_text(json.dumps({"results": summary, "node_operations": served}, indent=2))
    finally:
        run([str(REPO / "scripts" / "cluster.sh"), "stop"], env=cluster_env, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
