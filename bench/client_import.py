"""Which Kubernetes client should the Spark CLI use? Cold-start cost of `kubernetes` vs `lightkube`.

Every `kubeaccel spark status` is a fresh process, so the client's import time is paid on each call.
Each sample is a new interpreter that imports the client and, when a kubeconfig is given (argument
or $KUBECONFIG), builds a client from it and lists namespaces once against the real apiserver.

    .venv/bin/python bench/client_import.py [--kubeconfig PATH] [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

_PROGRAMS = {
    "lightkube": {
        "import": "import lightkube",
        "call": (
            "from lightkube import Client, KubeConfig\n"
            "from lightkube.resources.core_v1 import Namespace\n"
            "c = Client(KubeConfig.from_file({path!r}))\n"
            "list(c.list(Namespace))\n"
        ),
    },
    "kubernetes": {
        "import": "import kubernetes.client",
        "call": (
            "from kubernetes import client, config\n"
            "config.load_kube_config(config_file={path!r})\n"
            "client.CoreV1Api().list_namespace()\n"
        ),
    },
}


def _time_cold(source: str, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        # the dev cluster's self-signed certificate makes urllib3 warn on every call; not what we measure
        subprocess.run([sys.executable, "-c", source], check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    baseline = statistics.median(_time_cold("pass", args.runs))
    print(f"interpreter start (baseline, subtracted below): {baseline * 1000:.0f} ms")
    kinds = ["import"] + (["call"] if args.kubeconfig else [])
    if not args.kubeconfig:
        print("no kubeconfig given: measuring import only")
    results: dict[tuple[str, str], float] = {}
    for kind in kinds:
        for name, programs in _PROGRAMS.items():
            source = programs[kind].format(path=args.kubeconfig)
            samples = _time_cold(source, args.runs)
            median = statistics.median(samples) - baseline
            results[(name, kind)] = median
            fastest = min(samples) - baseline
            print(f"{name:<11} {kind:<7} median {median * 1000:7.0f} ms  (min {fastest * 1000:.0f})")
    for kind in kinds:
        ratio = results[("kubernetes", kind)] / results[("lightkube", kind)]
        print(f"{kind}: kubernetes / lightkube = {ratio:.2f}x")


if __name__ == "__main__":
    main()
