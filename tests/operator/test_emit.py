"""`spark submit --emit-application`: the SparkApplication of a command line resolves back to the same conf.

Matrix: a table of command lines and hypothesis-made ones (flags, --conf, deps, kinds) -> emit -> parse as
the CRD's model -> mapping -> resolve: the conf equals the command line's own, but for what the controller
names itself (pod name, operator labels); the CLI prints YAML the model accepts.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeaccel.errors import ConfigError
from kubeaccel.operator import api, mapping
from kubeaccel.spark.conf import SubmitRequest
from kubeaccel.spark.emit import application_for
from kubeaccel.spark.model import resolve

MASTER = "k8s://https://127.0.0.1:6443"
IMAGE = {"spark.kubernetes.container.image": "spark:4.3.0", "spark.kubernetes.namespace": "team-a"}
CONTROLLER_KEYS = (
    "spark.kubernetes.driver.pod.name",
    "spark.kubernetes.driver.label.",
    "spark.kubernetes.executor.label.",
)


def _ours(conf: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in conf.items() if not k.startswith(CONTROLLER_KEYS)}


def round_trip(request: SubmitRequest) -> tuple[dict[str, str], dict[str, str]]:
    document = application_for(request)
    app = api.SparkApplication.model_validate(document)
    app = app.model_copy(update={"metadata": app.metadata.model_copy(update={"namespace": app.metadata.namespace})})
    mapped = mapping.to_submission(app, master=MASTER)
    direct = dict(resolve(dataclasses.replace(request, name=app.metadata.name)).conf)
    back = dict(mapping.resolve_mapped(mapped).conf)
    return _ours(direct), _ours(back)


COMMAND_LINES = [
    SubmitRequest("local:///opt/app.jar", master=MASTER, main_class="a.Main", name="etl", conf=IMAGE, app_args=("1",)),
    SubmitRequest("local:///opt/pi.py", master=MASTER, name="pi", conf=IMAGE, py_files=("local:///x.py",)),
    SubmitRequest(
        "local:///opt/app.jar",
        master=MASTER,
        main_class="a.Main",
        name="big",
        conf={
            **IMAGE,
            "spark.driver.memory": "3g",
            "spark.executor.cores": "9",
            "spark.eventLog.enabled": "true",
            "spark.executor.resource.ve.amount": "1",
            "spark.executor.resource.ve.vendor": "nec.com",
            "spark.executor.resource.ve.discoveryScript": "/d",
        },
        flag_conf={
            "spark.driver.memory": "1g",
            "spark.executor.cores": "2",
            "spark.executor.instances": "4",
            "spark.jars.packages": "g:a:1",
        },
        jars=("local:///j1.jar",),
        files=("local:///f",),
        archives=("local:///a.zip#a",),
    ),
]


@pytest.mark.parametrize("request_", COMMAND_LINES, ids=["jvm", "python", "flags-and-confs"])
def test_round_trip(request_: SubmitRequest) -> None:
    direct, back = round_trip(request_)
    assert back == direct


_keys = st.sampled_from(
    [
        "spark.driver.memory", "spark.executor.memory", "spark.driver.cores", "spark.executor.cores",
        "spark.executor.instances", "spark.eventLog.enabled", "spark.kubernetes.container.image.pullPolicy",
        "spark.kubernetes.authenticate.driver.serviceAccountName", "spark.jars.packages",
        "spark.sql.shuffle.partitions", "spark.kubernetes.container.image.pullSecrets", "spark.driver.memoryOverhead",
    ]
)  # fmt: skip
_values = st.sampled_from(["1", "2", "3g", "512m", "true", "Always", "spark", "g:a:1", "s1,s2", "0"])


@settings(max_examples=200, deadline=None)
@given(
    conf=st.dictionaries(_keys, _values, max_size=6),
    flags=st.dictionaries(_keys, _values, max_size=3),
    resource=st.sampled_from(["local:///a.jar", "local:///a.py", "s3a://b/c.jar"]),
    args=st.lists(st.text("ab 1-", max_size=4), max_size=3),
)
def test_any_command_line_round_trips(
    conf: dict[str, str], flags: dict[str, str], resource: str, args: list[str]
) -> None:
    request = SubmitRequest(resource, master=MASTER, main_class="a.B", name="fuzz", conf={**conf, **IMAGE},
                            flag_conf=flags, app_args=tuple(args))  # fmt: skip
    try:
        direct, back = round_trip(request)
    except (ConfigError, ValueError):
        with pytest.raises((ConfigError, ValueError)):
            resolve(request)  # the command line itself is refused: emitting it need not succeed
        return
    assert back == direct


def test_cli_prints_an_application() -> None:
    argv = ["spark", "submit", "--name", "Spark Pi", "--class", "org.apache.spark.examples.SparkPi",
            "--conf", "spark.kubernetes.container.image=spark:4.3.0", "--num-executors", "2",
            "--emit-application", "local:///opt/spark/examples/jars/spark-examples.jar", "10"]  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from kubeaccel.cli import main; main(sys.argv[1:])", *argv],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    document: dict[str, Any] = yaml.safe_load(out)
    app = api.SparkApplication.model_validate(document)
    assert app.metadata.name == "spark-pi" and app.spec.executor.instances == 2 and app.spec.arguments == ["10"]
