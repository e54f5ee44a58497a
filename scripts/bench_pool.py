#!/usr/bin/env python3
"""How the client pool scales over nodes of fixed capacity.

Starts a 3-node cluster whose nodes are each capped at --cap operations per second
(hsmd --max-ops-per-second: a 2-core machine emulating hardware of fixed capacity),
makes one token RSA key (replicated to every node), then runs pkpspeed with the same
threads and duration against a client configuration that lists 1, then 2, then 3 of the
nodes. Prints operations per second, latency p50/p99, errors and each node's share, and
how close 3 nodes come to three times one.

    BIN_DIR=... scripts/bench_pool.py [--cap 200] [--threads 16] [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from benchlib import free_ports, run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cap", type=float, default=200)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--dir", default=str(REPO / ".bench" / "pool"))
    args = parser.parse_args()

    directory = Path(args.dir).resolve()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    env = dict(os.environ)
    env["PATH"] = f"{env.get('BIN_DIR', REPO / 'build' / 'bin')}:{env.get('PATH', '')}"
    cluster_env = dict(env, CLUSTER_DIR=str(directory / "cluster"), CLUSTER_PORTS=" ".join(map(str, free_ports(3))),
                       HSMD_RUN_ARGS=f"--max-ops-per-second {args.cap:g}")
    print(f"bench: 3 nodes, each capped at {args.cap:g} private-key operations per second", flush=True)
    run([str(REPO / "scripts" / "cluster.sh"), "start"], cluster_env)
    try:
        text = (directory / "cluster" / "env").read_text()
        user = re.search(r"^export CLOUDHSM_CU_USER=(\S+)$", text, re.M).group(1).strip("'\"")
        password = re.search(r"^export CLOUDHSM_CU_PASSWORD=(\S+)$", text, re.M).group(1).strip("'\"")
        env["n3fips_password"] = f"{user}:{password}"
        env["OPENSSL_CONF"] = "/dev/null"
        config = (directory / "cluster" / "cluster.cfg").read_text()
        node_lines = [line for line in config.splitlines() if line.startswith("node ")]
        other_lines = [line for line in config.splitlines() if not line.startswith("node ")]
        env["CLOUDHSM_CONFIG"] = str(directory / "cluster" / "cluster.cfg")
        out = run(["key_mgmt_util"], env,
                  input=f"loginHSM -u CU -s {user} -p {password}\ngenRSAKeyPair -m 2048 -e 65537 -l pool_bench\nexit\n")
        handle = re.search(r"private key handle: (\d+)", out).group(1)
        results = {}
        for count in (1, 2, 3):
            cfg = directory / "cluster" / f"cluster-{count}.cfg"  # relative paths stay valid
            cfg.write_text("\n".join(other_lines + node_lines[:count]) + "\n")
            node_env = dict(env, CLOUDHSM_CONFIG=str(cfg))
            out = run(["pkpspeed", "-k", handle, "-t", str(args.threads), "-d", str(args.duration), "--json"], node_env,
                      check=False)
            if "{" not in out:
                sys.exit(f"bench: pkpspeed printed no result:\n{out}")
            result = json.loads(out[out.index("{"):])
            results[count] = result
            shares = ", ".join(f"node {n['id']} {n['share_percent']:.0f}%" for n in result["nodes"])
            print(f"{count} node{'s' if count > 1 else ' '}: {result['ops_per_second']:8.1f} ops/s  "
                  f"p50 {result['latency_ms_p50']:6.2f} ms  p99 {result['latency_ms_p99']:6.2f} ms  "
                  f"errors {result['errors']}  ({shares})", flush=True)
        one = results[1]["ops_per_second"]
        print(f"scaling: 2 nodes = {results[2]['ops_per_second'] / one:.2f} x one node, "
              f"3 nodes = {results[3]['ops_per_second'] / one:.2f} x one node (ideal 3.00)")
    finally:
        run([str(REPO / "scripts" / "cluster.sh"), "stop"], cluster_env, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
