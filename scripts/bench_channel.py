#!/usr/bin/env python3
"""What the channel to the cluster costs next to signing in-process: every figure of
issue 10's table, measured side by side in one run on release builds.

Starts a 3-node cluster, imports a software RSA-2048 key (the walkthrough's import) and
then, in alternating rounds so that the machine's drift hits every variant alike:

- in-process signing with the plain key file through the default provider
  (scripts/sign_speed.c, 1 thread): the sign time (p50) and its CPU time;
- `pkpspeed -t 1` against the fake PEM: p50, and the difference to the in-process p50
  (the channel's added latency); the client's CPU per signature;
- sign_speed with the fake PEM through cloudhsm.so, 1 thread: the same seen by a libssl
  program (EVP_DigestSign), and the web server's CPU per signature;
- `pkpspeed -t 2`: the nodes' CPU per signature they served (utime+stime from /proc over
  the timed run only), over the in-process CPU time per signature;
- sign_speed with 2 threads, fake PEM through the provider vs the plain key through the
  default provider: the ratio of signatures per second;
- scripts/tcp_floor.c: one bare TCP request/answer on loopback with the server busy for
  the in-process sign time, the floor under any client of this design on this machine.

Then 60 one-shot `openssl dgst -sign` processes with the fake PEM, and how many of them
each node served (the nodes' own counters). Medians over the rounds are printed next to
the issue's goals. The nginx handshake ratios come from scripts/bench_tls.py.

    BIN_DIR=... MODULE=.../cloudhsm.so scripts/bench_channel.py [--rounds 3] [--duration 4]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from benchlib import free_ports, kmu_import, node_operations, run  # noqa: E402

ONE_SHOT_PROCESSES = 60


def json_line(out: str, what: str) -> dict:
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    sys.exit(f"bench: {what} printed no result:\n{out}")


def compile_c(name: str, work: Path) -> Path:
    binary = work / name
    run(["cc", "-O2", "-Wall", "-o", str(binary), str(REPO / "scripts" / f"{name}.c"), "-lssl", "-lcrypto",
         "-lpthread"])
    return binary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4, help="seconds per measurement")
    parser.add_argument("--dir", default=str(REPO / ".bench" / "channel"))
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if not shutil.which("cc"):
        sys.exit("bench: no C compiler (cc) for scripts/sign_speed.c")

    bench = Path(args.dir).resolve()
    shutil.rmtree(bench, ignore_errors=True)
    work = bench / "work"
    work.mkdir(parents=True)
    env = dict(os.environ)
    env["PATH"] = f"{env.get('BIN_DIR', REPO / 'build' / 'bin')}:{env.get('PATH', '')}"
    sign_speed = compile_c("sign_speed", work)
    tcp_floor = compile_c("tcp_floor", work)
    cluster_env = dict(env, CLUSTER_DIR=str(bench / "cluster"), CLUSTER_PORTS=" ".join(map(str, free_ports(3))))
    print("bench: starting a 3-node cluster in", bench / "cluster", flush=True)
    run([str(REPO / "scripts" / "cluster.sh"), "start"], env=cluster_env)
    try:
        text = (bench / "cluster" / "env").read_text()
        for name, value in re.findall(r"^export (\w+)=(.*)$", text, re.M):
            if name != "PATH":
                env[name] = shlex.split(value)[0] if value else ""
        conf = bench / "cluster" / "openssl.cnf"
        if os.environ.get("MODULE"):
            conf.write_text(re.sub(r"^module = .*$", f"module = {os.environ['MODULE']}", conf.read_text(), flags=re.M))
        if "module = " not in conf.read_text():
            sys.exit("bench: no cloudhsm.so for the provider runs (run `make build`, or set MODULE)")
        plain_env = dict(env, OPENSSL_CONF="/dev/null")
        provider_env = dict(env, OPENSSL_CONF=str(conf))
        run(["openssl", "genrsa", "-out", str(work / "plain.key"), "2048"], env=plain_env)
        fake = kmu_import(env, work)
        pids = ",".join((bench / "cluster" / f"node{n}.pid").read_text().strip() for n in range(3))
        duration = str(args.duration)
        print(f"bench: imported an RSA-2048 key; {args.rounds} rounds of {args.duration:g} s per measurement",
              flush=True)

        def sign(key: Path, threads: int, environment: dict) -> dict:
            return json_line(run([str(sign_speed), str(key), str(threads), duration], env=environment), "sign_speed")

        def pkpspeed(threads: int) -> dict:
            out = run(["pkpspeed", "-f", str(fake), "-t", str(threads), "-d", duration, "--json", "--node-pids", pids],
                      env=env)
            return json_line(out, "pkpspeed")

        samples: dict[str, list[float]] = {}

        def note(name: str, value: float):
            samples.setdefault(name, []).append(value)

        for round_ in range(1, args.rounds + 1):
            local = sign(work / "plain.key", 1, plain_env)
            note("local_p50_us", local["p50_us"])
            note("local_cpu_us", local["cpu_us_per_signature"])
            one = pkpspeed(1)
            note("pkp1_p50_us", one["latency_ms_p50"] * 1000)
            note("pkp1_client_cpu_us", one["client_cpu_us_per_op"])
            note("added_latency_us", one["latency_ms_p50"] * 1000 - local["p50_us"])
            via = sign(fake, 1, provider_env)
            note("provider1_p50_us", via["p50_us"])
            note("provider1_cpu_us", via["cpu_us_per_signature"])
            two = pkpspeed(2)
            note("pkp2_node_cpu_us", two["node_cpu_us_per_op"])
            note("node_cpu_ratio", two["node_cpu_us_per_op"] / local["cpu_us_per_signature"])
            plain2 = sign(work / "plain.key", 2, plain_env)
            hsm2 = sign(fake, 2, provider_env)
            note("local2_per_s", plain2["per_second"])
            note("provider2_per_s", hsm2["per_second"])
            note("local2_cpu_us", plain2["cpu_us_per_signature"])
            note("ratio2", hsm2["per_second"] / plain2["per_second"])
            floor = json_line(run([str(tcp_floor), "3000", str(local["p50_us"])]), "tcp_floor")
            note("floor_cpu_us", floor["client_cpu_us"])
            note("floor_wall_us", floor["added_wall_us"])
            print(f"round {round_}: in-process p50 {local['p50_us']:.0f} us (CPU {local['cpu_us_per_signature']:.0f}), "
                  f"pkpspeed -t 1 p50 {one['latency_ms_p50'] * 1000:.0f} us (client CPU "
                  f"{one['client_cpu_us_per_op']:.0f}), provider p50 {via['p50_us']:.0f} us (CPU "
                  f"{via['cpu_us_per_signature']:.0f}), node CPU {two['node_cpu_us_per_op']:.0f} us/sig, "
                  f"2 threads {hsm2['per_second']:.0f}/{plain2['per_second']:.0f} per s, "
                  f"TCP floor CPU {floor['client_cpu_us']:.0f} +{floor['added_wall_us']:.0f} us", flush=True)

        before = node_operations(env)
        data = work / "data.txt"
        data.write_text("one-shot signing process\n")
        for i in range(ONE_SHOT_PROCESSES):
            run(["openssl", "dgst", "-sha256", "-sign", str(fake), "-out", str(work / "one-shot.sig"), str(data)],
                env=provider_env)
        after = node_operations(env)
        spread = {n: after.get(n, 0) - before.get(n, 0) for n in sorted(after)}
    finally:
        run([str(REPO / "scripts" / "cluster.sh"), "stop"], env=cluster_env, check=False)

    m = {name: statistics.median(values) for name, values in samples.items()}

    def rounds(name: str, form: str) -> str:
        """Every round's value, so a reader sees the spread behind the median."""
        return "[" + " ".join(format(value, form) for value in samples[name]) + "]"

    fair = ONE_SHOT_PROCESSES / max(1, len(spread))
    rows = [
        ("in-process sign time, default provider, 1 thread (p50)", f"{m['local_p50_us']:.0f} us", "", None),
        ("  its CPU time per signature", f"{m['local_cpu_us']:.0f} us", "", None),
        ("pkpspeed -t 1 p50", f"{m['pkp1_p50_us']:.0f} us", "", None),
        ("added latency: pkpspeed -t 1 p50 - in-process p50",
         f"{m['added_latency_us']:.0f} us {rounds('added_latency_us', '.0f')}", "<= 100 us",
         m["added_latency_us"] <= 100),
        ("  through the provider, 1 thread (p50, and - in-process)",
         f"{m['provider1_p50_us']:.0f} us, +{m['provider1_p50_us'] - m['local_p50_us']:.0f} us", "", None),
        ("node CPU per signature (pkpspeed -t 2, /proc)", f"{m['pkp2_node_cpu_us']:.0f} us", "", None),
        ("  over the in-process CPU per signature", f"{m['node_cpu_ratio']:.2f}x {rounds('node_cpu_ratio', '.2f')}",
         "<= 1.10x",
         m["node_cpu_ratio"] <= 1.10),
        ("  (in-process CPU per signature with 2 threads)", f"{m['local2_cpu_us']:.0f} us", "", None),
        ("client CPU per signature, pkpspeed -t 1",
         f"{m['pkp1_client_cpu_us']:.0f} us {rounds('pkp1_client_cpu_us', '.0f')}", "<= 30 us",
         m["pkp1_client_cpu_us"] <= 30),
        ("client CPU per signature through the provider (web server's share)",
         f"{m['provider1_cpu_us']:.0f} us {rounds('provider1_cpu_us', '.0f')}", "<= 30 us", m["provider1_cpu_us"] <= 30),
        ("2 threads: provider / default provider, signatures per second",
         f"{m['ratio2']:.2f}x {rounds('ratio2', '.2f')}", ">= 0.80x", m["ratio2"] >= 0.80),
        (f"{ONE_SHOT_PROCESSES} one-shot `openssl dgst -sign` processes, served per node",
         ", ".join(f"node {n}: {c}" for n, c in spread.items()), f"each >= {fair / 2:.0f} (fair {fair:.0f})",
         min(spread.values(), default=0) >= fair / 2),
        ("floor: bare TCP exchange, server busy for the in-process p50: client CPU",
         f"{m['floor_cpu_us']:.0f} us {rounds('floor_cpu_us', '.0f')}", "", None),
        ("floor: its wall time beyond the busy time", f"{m['floor_wall_us']:.0f} us {rounds('floor_wall_us', '.0f')}", "",
         None),
    ]
    print()
    print(f"{'figure':70} {'median [each round]':>34} {'goal':>22}  met")
    for figure, measured, goal, met in rows:
        print(f"{figure:70} {measured:>34} {goal:>22}  {'' if met is None else ('yes' if met else 'NO')}")
    print("nginx full handshakes, fake PEM over plain key: scripts/bench_tls.py (make bench runs it too)")
    if args.json:
        Path(args.json).write_text(json.dumps({"samples": samples, "medians": m, "one_shot_spread": spread}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
