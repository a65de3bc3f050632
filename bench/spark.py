"""kubeaccel vs the real spark-submit, against the same apiserver, in one run.

    kubeaccel cluster up --state-dir /tmp/bench-cluster        # or any cluster you may write to
    .venv/bin/python bench/spark.py --kubeconfig /tmp/bench-cluster/kubeconfig [--apps 1000]

Measures, each as a cold CLI process (what a user or a scheduler script pays):
  1. submit latency: `kubeaccel spark submit` vs `spark-submit --deploy-mode cluster` (fire-and-forget);
  2. status with a glob over N apps: `kubeaccel spark status NS:bench-*` vs `spark-submit --status`;
  3. kill with a glob over N apps: `kubeaccel spark kill NS:bench-*` vs `spark-submit --kill`.
The N apps are created cheaply (driver pods only, with Spark's labels, straight through the API).
Goals (issue 4): submit >= 20x faster; status and kill >= 20x faster and under 1 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubeaccel.kube.client import Kube
from kubeaccel.kube.tenancy import create_tenant
from kubeaccel.spark.builder import Generated, build
from kubeaccel.spark.conf import SubmitRequest, resolve_conf

BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fixtures.spark import spark_submit_env  # noqa: E402  (the same environment the reference test gives spark-submit)


def _timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(
            f"failed ({result.returncode}): {' '.join(command)}\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return elapsed


def _create_apps(kube: Kube, namespace: str, count: int) -> None:
    """N driver pods as Spark labels them, created in parallel (no Service/ConfigMap: only listing matters).

    Each is held by a scheduling gate: 1,000 pods do not fit on the simulated node, and a scheduler
    retrying 1,000 unschedulable pods takes a whole core of this 2-core VM away from whichever CLI is
    being timed at that moment. Gated pods stay Pending quietly; the API objects are the same size.
    """
    request = SubmitRequest(
        "local:///opt/app.py", master=f"k8s://{kube.server}", conf={"spark.kubernetes.container.image": "spark:bench"}
    )

    def one(index: int) -> None:
        conf = {**resolve_conf(request), "spark.app.name": f"bench-{index}"}
        manifests = build(request, conf, namespace, Generated.fresh("bench"))
        manifests.driver_pod["spec"]["schedulingGates"] = [{"name": "kubeaccel.dev/bench-hold"}]
        kube.create(manifests.driver_pod, namespace=namespace)

    # msgspec builds its type info on first use and that is not thread-safe: warm it up serially
    one(0)
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, range(1, count)))


def _wait_gone(kube: Kube, namespace: str) -> None:
    from lightkube.resources.core_v1 import Pod

    deadline = time.monotonic() + 120
    while kube.list(Pod, namespace=namespace) and time.monotonic() < deadline:
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--kubeconfig", type=Path, default=os.environ.get("KUBEACCEL_TEST_KUBECONFIG") or os.environ.get("KUBECONFIG")
    )
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--submit-runs", type=int, default=5)
    parser.add_argument("--spark-runs", type=int, default=2, help="spark-submit runs per measurement (~4-7 s each)")
    args = parser.parse_args()
    if not args.kubeconfig:
        raise SystemExit("give --kubeconfig (or start one: kubeaccel cluster up --state-dir /tmp/bench-cluster)")
    kube = Kube.connect(kubeconfig=args.kubeconfig)
    env = spark_submit_env(args.kubeconfig)
    master = f"k8s://{kube.server}"
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    create_tenant(kube, namespace, {})
    kube.apply(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": namespace}},
        namespace=namespace,
    )
    common = ["--conf", f"spark.kubernetes.namespace={namespace}", "--conf", "spark.kubernetes.container.image=img"]
    results: list[tuple[str, float, float]] = []
    try:
        ours = [
            _timed(
                [
                    str(BIN / "kubeaccel"),
                    "spark",
                    "submit",
                    "--master",
                    master,
                    "--kubeconfig",
                    str(args.kubeconfig),
                    "--no-preflight",
                    *common,
                    "local:///opt/app.py",
                ],
                env,
            )
            for _ in range(args.submit_runs)
        ]
        theirs = [
            _timed(
                [
                    str(BIN / "spark-submit"),
                    "--master",
                    master,
                    "--deploy-mode",
                    "cluster",
                    *common,
                    "--conf",
                    "spark.kubernetes.submission.waitAppCompletion=false",
                    "local:///opt/app.py",
                ],
                env,
            )
            for _ in range(args.spark_runs)
        ]
        results.append(("submit", statistics.median(ours), statistics.median(theirs)))
        _timed(
            [
                str(BIN / "kubeaccel"),
                "spark",
                "kill",
                f"{namespace}:*",
                "--grace-period",
                "0",
                "--kubeconfig",
                str(args.kubeconfig),
            ],
            env,
        )
        _wait_gone(kube, namespace)

        start = time.perf_counter()
        _create_apps(kube, namespace, args.apps)
        print(f"created {args.apps} driver pods in {time.perf_counter() - start:.1f} s")
        glob = f"{namespace}:bench-*"
        ours = [
            _timed(
                [str(BIN / "kubeaccel"), "spark", "status", glob, "-o", "json", "--kubeconfig", str(args.kubeconfig)],
                env,
            )
            for _ in range(args.submit_runs)
        ]
        theirs = [
            _timed([str(BIN / "spark-submit"), "--master", master, "--status", glob], env)
            for _ in range(args.spark_runs)
        ]
        results.append((f"status, glob over {args.apps} apps", statistics.median(ours), statistics.median(theirs)))

        kill_ours = _timed(
            [
                str(BIN / "kubeaccel"),
                "spark",
                "kill",
                glob,
                "--grace-period",
                "0",
                "-o",
                "json",
                "--kubeconfig",
                str(args.kubeconfig),
            ],
            env,
        )
        _wait_gone(kube, namespace)
        _create_apps(kube, namespace, args.apps)
        kill_theirs = _timed(
            [
                str(BIN / "spark-submit"),
                "--master",
                master,
                "--kill",
                glob,
                "--conf",
                "spark.kubernetes.appKillPodDeletionGracePeriod=0",
            ],
            env,
        )
        results.append((f"kill, glob over {args.apps} apps", kill_ours, kill_theirs))
    finally:
        from lightkube.resources.core_v1 import Namespace

        kube.delete(Namespace, namespace, missing_ok=True)

    print(f"\n{'measurement':<32} {'kubeaccel':>10} {'spark-submit':>13} {'ratio':>8}  goal")
    for name, ours_s, theirs_s in results:
        goal = ">= 20x" + (" and < 1 s" if not name.startswith("submit") else "")
        ok = theirs_s / ours_s >= 20 and (name.startswith("submit") or ours_s < 1)
        print(
            f"{name:<32} {ours_s:>9.3f}s {theirs_s:>12.3f}s {theirs_s / ours_s:>7.1f}x  {goal}: "
            f"{'met' if ok else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
