#!/usr/bin/env python3
"""Full-handshake throughput of nginx with its key in the HSM cluster versus the same
key as a plain key file, measured side by side in one run.

An existing software key is imported with key_mgmt_util (the walkthrough's import path);
nginx A uses the key file itself, nginx B the fake PEM from getCaviumPrivKey, same
certificate, same settings: worker_processes 2, keepalive_timeout 0, session cache and
tickets off, a tiny static page. wrk -t2 -c32 -d<duration> -H 'Connection: close'
alternates between the two for TLS 1.3 and TLS 1.2 ECDHE-RSA; the ratio of the medians
is what counts, since absolute numbers drift on a shared machine.

    BIN_DIR=... MODULE=.../cloudhsm.so scripts/bench_tls.py [--rounds 3] [--duration 10]
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
        ssl_ciphers ECDHE-RSA-AES128-GCM-SHA256;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def start_nginx(name: str, work: Path, key: Path, cert: Path, env: dict) -> dict:
    d = work / f"nginx-{name}"
    (d / "tmp").mkdir(parents=True, exist_ok=True)
    port13, port12 = free_ports(2)
    conf = d / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=d, cert=cert, key=key, port13=port13, port12=port12))
    run(["nginx", "-c", str(conf), "-p", str(d)], env=env)
    for _ in range(100):
        if (d / "nginx.pid").exists():
            break
        time.sleep(0.05)
    return {"dir": d, "conf": conf, "TLS 1.3": port13, "TLS 1.2 ECDHE-RSA": port12}


def stop_nginx(server: dict):
    pid_file = server["dir"] / "nginx.pid"
    if pid_file.exists():
        os.kill(int(pid_file.read_text()), signal.SIGQUIT)


def wrk(port: int, duration: int) -> tuple[float, str]:
    out = run(["wrk", "-t2", "-c32", f"-d{duration}s", "-H", "Connection: close", f"https://127.0.0.1:{port}/"])
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    problems = " ".join(m.group(0) for m in re.finditer(r"(Non-2xx or 3xx responses: \d+|Socket errors: [^\n]+)", out))
    return rate, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--dir", default=str(REPO / ".bench"))
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
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
        run(["openssl", "genrsa", "-out", str(work / "plain.key"), "2048"], env=plain_env)
        run(["openssl", "req", "-new", "-x509", "-key", str(work / "plain.key"), "-subj", "/CN=localhost", "-days", "2",
             "-out", str(work / "cert.pem")], env=plain_env)
        fake = kmu_import(env, work)
        print("bench: imported the key; nginx A uses plain.key, nginx B the fake PEM", flush=True)
        servers = {
            "plain key file": start_nginx("plain", work, work / "plain.key", work / "cert.pem", plain_env),
            "HSM (fake PEM)": start_nginx("hsm", work, fake, work / "cert.pem", env),
        }
        try:
            ops_before = node_operations(env)
            results: dict[str, dict[str, list[float]]] = {m: {v: [] for v in servers} for m in ("TLS 1.3", "TLS 1.2 ECDHE-RSA")}
            for round_ in range(1, args.rounds + 1):
                for mode in results:
                    order = list(servers) if round_ % 2 else list(reversed(servers))
                    for variant in order:
                        rate, problems = wrk(servers[variant][mode], args.duration)
                        results[mode][variant].append(rate)
                        print(f"round {round_}  {mode:18} {variant:16} {rate:8.1f} handshakes/s {problems}", flush=True)
            ops_after = node_operations(env)
        finally:
            for server in servers.values():
                stop_nginx(server)
        print()
        print(f"{'mode':18} {'plain key (median)':>20} {'HSM (median)':>14} {'ratio HSM/plain':>16}")
        summary = {}
        for mode, variants in results.items():
            plain = statistics.median(variants["plain key file"])
            hsm = statistics.median(variants["HSM (fake PEM)"])
            summary[mode] = {"plain": variants["plain key file"], "hsm": variants["HSM (fake PEM)"],
                             "ratio": hsm / plain}
            print(f"{mode:18} {plain:20.1f} {hsm:14.1f} {hsm / plain:16.3f}")
        served = {n: ops_after.get(n, 0) - ops_before.get(n, 0) for n in ops_after}
        total = sum(served.values()) or 1
        print("private-key operations per node during the HSM runs: "
              + ", ".join(f"node {n}: {c} ({100 * c / total:.0f}%)" for n, c in sorted(served.items())))
        if args.json:
            Path(args.json).write_text(json.dumps({"results": summary, "node_operations": served}, indent=2))
    finally:
        run([str(REPO / "scripts" / "cluster.sh"), "stop"], env=cluster_env, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
