"""--packages / --repositories / --exclude-packages: flags -> confs, coordinates checked, and the
client-side lookup of each coordinate in a real Maven repository layout (a file:// repository made
here with javac, the same one the real-node test resolves with Ivy inside the driver)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.spark import maven_repo

from kubeaccel.errors import ConfigError, NotFoundError, UnavailableError
from kubeaccel.spark.conf import FLAG_CONFS, SubmitRequest
from kubeaccel.spark.model import resolve
from kubeaccel.spark.packages import Coordinate, check_resolvable, packages_from_conf, parse_coordinate

MASTER = "k8s://https://127.0.0.1:6443"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> str:
    return maven_repo(tmp_path_factory.mktemp("maven"))


def _app(**flags: str):  # type: ignore[no-untyped-def]
    return resolve(
        SubmitRequest(
            "local:///job.py",
            master=MASTER,
            conf={"spark.kubernetes.container.image": "img", "spark.jars.packages": "a:from-conf:1"},
            flag_conf={FLAG_CONFS[k]: v for k, v in flags.items()},
        )
    )


def test_flags_set_the_confs_spark_submit_passes_to_the_driver() -> None:
    app = _app(packages="g:a:1,g/b:2", repositories="file:///r", exclude_packages="x:y")
    assert app.conf["spark.jars.packages"] == "g:a:1,g/b:2"  # the flag beats --conf, as in spark-submit
    assert app.conf["spark.jars.repositories"] == "file:///r"
    assert app.conf["spark.jars.excludes"] == "x:y"
    assert app.packages.coordinates == (Coordinate("g", "a", "1"), Coordinate("g", "b", "2"))


def test_other_driver_flags_set_their_confs() -> None:
    app = _app(driver_class_path="/x.jar", driver_java_options="-Dk=v", driver_library_path="/lib")
    assert app.conf["spark.driver.extraClassPath"] == "/x.jar"
    assert app.conf["spark.driver.extraJavaOptions"] == "-Dk=v"
    assert app.conf["spark.driver.extraLibraryPath"] == "/lib"


@pytest.mark.parametrize("text", ["a:b", "a:b:c:d", "a::c", "a:b:c d", ":::", "a:b:${x}"])
def test_bad_coordinates(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a Maven coordinate"):
        parse_coordinate(text)


@pytest.mark.parametrize(
    ("conf", "words"),
    [
        ({"spark.jars.excludes": "a:b:c"}, "not groupId:artifactId"),
        ({"spark.jars.repositories": "no-scheme/path"}, "not a repository URL"),
        ({"spark.kubeaccel.packages.check": "maybe"}, "not true or false"),
    ],
)
def test_bad_package_confs(conf: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        packages_from_conf(conf)


def test_a_coordinate_in_the_repository_resolves(repo: str) -> None:
    packages = packages_from_conf(
        {"spark.jars.packages": "dev.kubeaccel.test:hello:1.0", "spark.jars.repositories": repo}
    )
    check_resolvable(packages, default_repositories=())


def test_a_missing_version_fails_the_submit_at_once(repo: str) -> None:
    packages = packages_from_conf(
        {"spark.jars.packages": "dev.kubeaccel.test:hello:9.9", "spark.jars.repositories": repo}
    )
    with pytest.raises(NotFoundError, match=r"dev.kubeaccel.test:hello:9.9 is in none of the repositories"):
        check_resolvable(packages, default_repositories=())


def test_found_in_a_later_repository(repo: str, tmp_path: Path) -> None:
    packages = packages_from_conf(
        {
            "spark.jars.packages": "dev.kubeaccel.test:hello:1.0",
            "spark.jars.repositories": f"{(tmp_path / 'empty').as_uri()},{repo}",
        }
    )
    check_resolvable(packages, default_repositories=())


def test_no_repository_answers(tmp_path: Path) -> None:
    packages = packages_from_conf({"spark.jars.packages": "g:a:1", "spark.jars.repositories": "nosuchprotocol://repo"})
    with pytest.raises(UnavailableError, match="cannot look up g:a:1"):
        check_resolvable(packages, default_repositories=())


def test_the_check_can_be_switched_off() -> None:
    packages = packages_from_conf({"spark.jars.packages": "g:a:1", "spark.kubeaccel.packages.check": "false"})
    check_resolvable(packages, default_repositories=("nosuchprotocol://repo",))
