"""spark-submit flags -> conf: precedence (flag > --conf > properties file), names, jars, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeaccel.errors import ConfigError, NotFoundError
from kubeaccel.spark.conf import (
    SubmitRequest,
    format_properties,
    master_url,
    parse_conf_pairs,
    parse_properties,
    resolve_conf,
    size_to_mib,
)

MASTER = "k8s://https://127.0.0.1:6443"


def test_precedence_flag_over_conf_over_properties_file(tmp_path: Path) -> None:
    props = tmp_path / "app.conf"
    props.write_text("spark.app.name fromfile\nspark.executor.instances=7\nspark.driver.memory: 3g\n# comment\n")
    request = SubmitRequest(
        app_resource="local:///app.jar",
        master=MASTER,
        main_class="a.Main",
        name="fromflag",
        conf={"spark.app.name": "fromconf", "spark.executor.instances": "4"},
        properties_file=props,
    )
    conf = resolve_conf(request)
    assert conf["spark.app.name"] == "fromflag"
    assert conf["spark.executor.instances"] == "4"
    assert conf["spark.driver.memory"] == "3g"


def test_dedicated_flags_beat_conf_except_driver_memory() -> None:
    flags = {"spark.driver.memory": "4g", "spark.executor.instances": "3"}
    request = SubmitRequest(
        "local:///a.py",
        master=MASTER,
        conf={"spark.driver.memory": "1g", "spark.executor.instances": "9"},
        flag_conf=flags,
    )
    conf = resolve_conf(request)
    assert (conf["spark.driver.memory"], conf["spark.executor.instances"]) == ("1g", "3")
    assert resolve_conf(SubmitRequest("local:///a.py", master=MASTER, flag_conf=flags))["spark.driver.memory"] == "4g"


def test_name_defaults_to_main_class_then_file_name() -> None:
    assert resolve_conf(SubmitRequest("local:///a.jar", master=MASTER, main_class="x.Y"))["spark.app.name"] == "x.Y"
    assert resolve_conf(SubmitRequest("local:///opt/job.py", master=MASTER))["spark.app.name"] == "job.py"


def test_application_jar_is_appended_to_spark_jars() -> None:
    conf = resolve_conf(SubmitRequest("local:///a.jar", master=MASTER, main_class="x.Y", jars=("local:///dep.jar",)))
    assert conf["spark.jars"] == "local:///dep.jar,local:///a.jar"
    assert conf["spark.submit.pyFiles"] == ""
    python = resolve_conf(SubmitRequest("local:///a.py", master=MASTER, py_files=("local:///b.py",)))
    assert "spark.jars" not in python
    assert python["spark.submit.pyFiles"] == "local:///b.py"


@pytest.mark.parametrize(
    ("request_", "error", "words"),
    [
        (SubmitRequest("local:///a.jar", master=MASTER), ConfigError, "main class"),
        (SubmitRequest("local:///a.py"), ConfigError, "master"),
        (SubmitRequest("local:///a.py", master="yarn"), ConfigError, "not a Kubernetes master"),
        (SubmitRequest("local:///a.py", master=MASTER, deploy_mode="client"), ConfigError, "deploy mode"),
        (
            SubmitRequest("local:///a.py", master=MASTER, properties_file=Path("/nonexistent")),
            NotFoundError,
            "does not exist",
        ),
    ],
)
def test_bad_requests_are_clear_errors(request_: SubmitRequest, error: type[Exception], words: str) -> None:
    with pytest.raises(error) as info:
        resolve_conf(request_)
    assert words in str(info.value)
    assert info.value.hint  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("master", "url"),
    [
        ("k8s://https://h:6443", "https://h:6443"),
        ("k8s://h:6443", "https://h:6443"),
        ("k8s://http://1.2.3.4:80", "http://1.2.3.4:80"),
    ],
)
def test_master_url(master: str, url: str) -> None:
    assert master_url(master) == url


@pytest.mark.parametrize("master", ["k8s://", "spark://h:7077", "k8s://ftp://h"])
def test_bad_master_url(master: str) -> None:
    with pytest.raises(ConfigError):
        master_url(master)


def test_conf_pairs() -> None:
    assert parse_conf_pairs(["a=b", "c=d=e", "f="]) == {"a": "b", "c": "d=e", "f": ""}
    with pytest.raises(ConfigError, match="key=value"):
        parse_conf_pairs(["novalue"])


@given(
    st.dictionaries(
        st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1),
        st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"))),
    )
)
def test_properties_round_trip(conf: dict[str, str]) -> None:
    conf = {k: v for k, v in conf.items() if k[0] not in "#!"}
    assert parse_properties(format_properties(conf, header=["hello"])) == conf


@pytest.mark.parametrize(
    ("text", "mib"), [("1g", 1024), ("512m", 512), ("2048", 2048), ("1t", 1024 * 1024), ("4GB", 4096)]
)
def test_size_to_mib(text: str, mib: int) -> None:
    assert size_to_mib(text, "spark.driver.memory") == mib


@pytest.mark.parametrize("text", ["", "1.5g", "lots", "2x"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ConfigError, match=r"spark\.driver\.memory"):
        size_to_mib(text, "spark.driver.memory")
