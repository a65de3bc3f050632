"""Reference test: what `kubeaccel spark submit` creates equals what the real spark-submit creates.

The real spark-submit (pyspark 4.3, Spark's own Kubernetes client) and kubeaccel get the same
command line, against the same real apiserver. We read back the driver pod, conf ConfigMap, headless
Service, NetworkPolicy (and the executor pod-template ConfigMap) each created, replace what is
generated per submission (app ID, name suffixes, UUIDs, timestamps) and compare field by field.

Cases: a Scala jar with local:// and a --properties-file; a PySpark file with accelerators, node
selector, service account, labels, annotations, driver env, pull policy, resource flags against
--conf, and local:// py-files/files/archives/jars; driver and executor pod templates with a named
container, a fixed pod name, cpu request/limit and explicit memory overhead; --packages, --repositories
(a file:// Maven repository made here), --exclude-packages, spark.jars.ivy, --driver-java-options and
--driver-class-path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fixtures.spark import (
    SPARK_USER,
    explain,
    json_diff,
    maven_repo,
    normalise,
    read_back,
    start_spark_submit,
    submission_id,
)

from kubeaccel.cli import cli
from kubeaccel.kube.client import Kube

pytestmark = [pytest.mark.cluster, pytest.mark.spark, pytest.mark.slow]

PROPERTIES = """\
# read with spark-submit's precedence: flags and --conf win over this file
spark.app.name          from-file
spark.executor.instances 4
spark.kubernetes.driver.label.source=properties-file
spark.kubernetes.namespace: overridden-by-conf
"""

TEMPLATE = """\
apiVersion: v1
kind: Pod
metadata:
  labels:
    team: ml
  annotations:
    note: from-template
spec:
  tolerations:
  - key: accel
    operator: Exists
  containers:
  - name: sidecar
    image: busybox:1.36
  - name: main
    env:
    - name: FROM_TEMPLATE
      value: "1"
"""


def _cases(namespace: str, template: Path, properties: Path, repo: str, ivy: Path) -> dict[str, list[str]]:
    common = [
        "--conf",
        f"spark.kubernetes.namespace={namespace}",
        "--conf",
        "spark.kubernetes.container.image=spark:ref",
        # four JVMs side by side on a loaded 2-core machine: fabric8's 10 s request timeout is too short
        "--conf",
        "spark.kubernetes.submission.requestTimeout=120000",
        "--conf",
        "spark.kubernetes.submission.connectionTimeout=120000",
    ]
    return {
        "scala-jar": [
            *common,
            "--properties-file",
            str(properties),
            "--name",
            "Spark Pi",
            "--class",
            "org.apache.spark.examples.SparkPi",
            "local:///opt/spark/examples/jars/spark-examples.jar",
            "100",
        ],
        "pyspark-accelerators": [
            *common,
            "--name",
            "py_accel.v1",
            # dedicated flags win over --conf, in spark-submit and in kubeaccel
            "--driver-memory",
            "2g",
            "--conf",
            "spark.driver.memory=1g",
            "--driver-cores",
            "2",
            "--num-executors",
            "3",
            "--executor-memory",
            "3g",
            "--conf",
            "spark.kubernetes.authenticate.driver.serviceAccountName=spark",
            "--conf",
            "spark.kubernetes.node.selector.disk=ssd",
            "--conf",
            "spark.kubernetes.driver.label.team=a",
            "--conf",
            "spark.kubernetes.driver.annotation.owner=alice",
            "--conf",
            "spark.kubernetes.container.image.pullPolicy=Always",
            "--conf",
            "spark.kubernetes.driverEnv.MODE=batch",
            "--conf",
            "spark.pyspark.python=/usr/bin/python3",
            "--conf",
            "spark.driver.resource.ve.amount=1",
            "--conf",
            "spark.driver.resource.ve.vendor=nec.com",
            "--conf",
            "spark.driver.resource.ve.discoveryScript=/opt/kubeaccel/discover",
            "--conf",
            "spark.executor.resource.ve.amount=2",
            "--conf",
            "spark.executor.resource.ve.vendor=nec.com",
            "--conf",
            "spark.executor.resource.ve.discoveryScript=/opt/kubeaccel/discover",
            "--py-files",
            "local:///opt/app/deps.zip,local:///opt/app/util.py",
            "--files",
            "local:///opt/app/lookup.csv",
            "--archives",
            "local:///opt/app/env.tar.gz#env",
            "--jars",
            "local:///opt/app/udf.jar",
            "local:///opt/app/job.py",
            "--input",
            "s3a://bucket/in",
        ],
        "pod-templates": [
            *common,
            "--name",
            "templated",
            "--class",
            "a.B",
            "--conf",
            f"spark.kubernetes.driver.podTemplateFile={template}",
            "--conf",
            f"spark.kubernetes.executor.podTemplateFile={template}",
            "--conf",
            "spark.kubernetes.driver.podTemplateContainerName=main",
            "--conf",
            f"spark.kubernetes.driver.pod.name=fixed-{namespace}-driver",
            "--conf",
            "spark.kubernetes.driver.limit.cores=2",
            "--conf",
            "spark.kubernetes.driver.request.cores=500m",
            "--conf",
            "spark.driver.memoryOverhead=512m",
            "local:///opt/app.jar",
        ],
        # spark-submit resolves the packages on the client (from this file:// repository), then hands the
        # coordinates to the driver's Ivy through the conf: the same confs must reach our driver
        "packages": [
            *common,
            "--name",
            "with-packages",
            "--packages",
            "dev.kubeaccel.test:hello:1.0",
            "--repositories",
            repo,
            "--exclude-packages",
            "org.slf4j:slf4j-api",
            "--conf",
            f"spark.jars.ivy={ivy}",
            "--driver-java-options",
            "-Dkubeaccel.test=1",
            "--driver-class-path",
            "/opt/extra/*",
            "local:///opt/app/job.py",
        ],
    }


def test_kubeaccel_builds_what_spark_submit_builds(
    kube: Kube, kubeconfig: Path, spark_namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(TEMPLATE)
    master = f"k8s://{kube.server}"
    properties = tmp_path / "app.conf"
    properties.write_text(PROPERTIES)
    cases = _cases(spark_namespace, template, properties, maven_repo(tmp_path / "maven"), tmp_path / "ivy")
    # the JVM starts dominate: run Spark's three submissions side by side
    running = {name: start_spark_submit(kubeconfig, ["--master", master, *args]) for name, args in cases.items()}
    theirs: dict[str, Any] = {}
    for name, process in running.items():
        output, _ = process.communicate(timeout=240)
        assert process.returncode == 0, f"{name}: spark-submit failed:\n{explain(output)}"
        namespace, pod = submission_id(output)
        theirs[name] = read_back(kube, namespace, pod)

    monkeypatch.setenv("SPARK_USER", SPARK_USER)
    runner = CliRunner()
    for name, case_args in cases.items():
        # the fixed pod name is taken by Spark's submission already
        args = [a.replace(f"fixed-{spark_namespace}-driver", f"fixed-{spark_namespace}-driver-2") for a in case_args]
        result = runner.invoke(
            cli,
            [
                "spark",
                "submit",
                "--kubeconfig",
                str(kubeconfig),
                "--master",
                master,
                "--deploy-mode",
                "cluster",
                "--conf",
                "spark.kubernetes.submission.waitAppCompletion=false",
                "--output",
                "json",
                *args,
            ],
        )
        assert result.exit_code == 0, f"{name}: {result.output}"
        sid = json.loads(result.output)
        ours = read_back(kube, sid["namespace"], sid["driver_pod"])
        expected, actual = normalise(theirs[name]), normalise(ours)
        assert sorted(actual) == sorted(expected), name
        for kind in expected:
            assert actual[kind] == expected[kind], f"{name}: {kind} differs\n{json_diff(expected[kind], actual[kind])}"
