"""Pi by Monte Carlo, with every task reporting the accelerator addresses Spark gave it.

Usage: accel_pi.py [PARTITIONS] [RESOURCE_NAME]   (defaults: 4, every resource the task holds)

Prints ``Pi is roughly <x>`` and one ``kubeaccel-task-resources <json>`` line: a list of
``{"partition", "executor", "host", "env", "resources": {name: [addresses]}}``, so tests and the demo
can check that tasks received exactly the devices the device plugin allocated.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
from collections.abc import Iterator

from pyspark import TaskContext
from pyspark.sql import SparkSession

SAMPLES_PER_PARTITION = 100_000
REPORT_PREFIX = "kubeaccel-task-resources "


def _sample(partition: int, _rows: Iterator[int]) -> Iterator[tuple[int, dict[str, object]]]:
    ctx = TaskContext.get()
    resources = {name: list(info.addresses) for name, info in ctx.resources().items()} if ctx else {}
    rng = random.Random(partition)
    inside = 0
    for _ in range(SAMPLES_PER_PARTITION):
        x, y = rng.random() * 2 - 1, rng.random() * 2 - 1
        inside += x * x + y * y <= 1
    report = {
        "partition": partition,
        # Python workers fork from one daemon per executor: its PID tells executors on one host apart.
        "executor": f"{socket.gethostname()}:{os.getppid()}",
        "host": socket.gethostname(),
        "env": {k: v for k, v in os.environ.items() if k.startswith("KUBEACCEL_DEVICES_")},
        "resources": resources,
    }
    yield inside, report


def main(argv: list[str]) -> None:
    partitions = int(argv[1]) if len(argv) > 1 else 4
    only = argv[2] if len(argv) > 2 else None
    spark = SparkSession.builder.appName("kubeaccel-pi").getOrCreate()
    rdd = spark.sparkContext.parallelize(range(partitions), partitions)
    results = rdd.mapPartitionsWithIndex(_sample).collect()
    inside = sum(r[0] for r in results)
    reports = [r[1] for r in results]
    if only is not None:
        for report in reports:
            report["resources"] = {k: v for k, v in report["resources"].items() if k == only}  # type: ignore[union-attr]
    print(f"Pi is roughly {4.0 * inside / (partitions * SAMPLES_PER_PARTITION):f}")
    print(REPORT_PREFIX + json.dumps(reports, sort_keys=True))
    sys.stdout.flush()
    spark.stop()


if __name__ == "__main__":
    main(sys.argv)
