"""Every file a user names on the command line is read by one reader (`kubeaccel.paths.read_user_text`): whatever
the file holds or is, the command ends in one message naming the file and the option, exit 2, never a traceback
and never a hang.

Matrix, over every path option of the CLI tree that names a file the command reads (found by walking the tree;
outputs and sockets are listed apart, with the reason): contents drawn by hypothesis (bytes with a NUL, bytes
that are not UTF-8, nothing but white space) crossed with every option; and for each option a directory, a FIFO
with no writer, a character device and a file one byte over the reader's bound. Kubeconfig files that a kubeconfig names
(certificate-authority, client certificate and key, tokenFile) go through the same reader.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from fixtures.cli import run
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli_paths import PATH_PARAMS

from kubeaccel.devices.config import MAX_CONFIG_BYTES
from kubeaccel.kube.kubeconfig import KUBECONFIG_MAX_BYTES
from kubeaccel.paths import FILE_MAX_BYTES

# path options that are not files the command reads, and why
NOT_READ = {
    ("discover", "--write-script"): "written, not read",
    ("plugin run", "--pod-resources-socket"): "a unix socket the daemon connects to",
    ("plugin check", "--kubelet-socket"): "a unix socket the checker serves (created, not read)",
}

# what each command needs besides the file so that the file is what it reads first; TMP is a scratch directory
EXTRA = {
    "spark submit": ["--master", "k8s://https://127.0.0.1:1", "--conf", "spark.kubernetes.container.image=i",
                     "local:///a.py"],
    "spark kill": ["x"], "spark logs": ["x"], "spark status": ["x"], "spark list": [],
    "tenant create": ["t"], "tenant show": ["t"],
    "dra check": ["--registry-dir", "TMP", "--cdi-dir", "TMP"],
    "dra run": ["--registry-dir", "TMP", "--plugins-dir", "TMP", "--state-dir", "TMP", "--cdi-dir", "TMP"],
    "dra devices": [], "dra device-classes": [], "plugin devices": [],
    "plugin run": ["--socket-dir", "TMP"],
    "devices": [], "operator run": [], "ui": ["--port", "0"],
}  # fmt: skip

# what the message says the file is, per option (the option itself, or the hint names it)
WHAT = {"--properties-file": "--properties-file", "--kubeconfig": "kubeconfig", "--config": "config file"}
BOUND = {"--properties-file": FILE_MAX_BYTES, "--kubeconfig": KUBECONFIG_MAX_BYTES, "--config": MAX_CONFIG_BYTES}


def _file_options() -> list[tuple[str, str]]:
    found = []
    for command, param in PATH_PARAMS:
        where = (" ".join(command), param.opts[-1])
        if isinstance(param, click.Option) and param.type.file_okay and where not in NOT_READ:  # type: ignore[attr-defined]
            found.append(where)
    return found


FILE_OPTIONS = _file_options()
IDS = [f"{c}:{o}" for c, o in FILE_OPTIONS]


def test_every_file_option_is_covered() -> None:
    assert len(FILE_OPTIONS) >= 15
    assert {c for c, _ in FILE_OPTIONS} == set(EXTRA)
    assert {o for _, o in FILE_OPTIONS} == set(WHAT) == set(BOUND)


@contextlib.contextmanager
def _no_hang(seconds: int = 20) -> Iterator[None]:
    def fail(signum: int, frame: object) -> None:
        raise AssertionError(f"the command blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


VALID_CONFIG = "resources:\n  - name: example.com/sim\n    backend: simulated\n    count: 1\n"


def _run_with(command: str, option: str, file: Path, scratch: Path) -> tuple[int, str]:
    extra = [str(scratch) if a == "TMP" else a for a in EXTRA[command]]
    if option != "--config" and command in {c for c, o in FILE_OPTIONS if o == "--config"}:
        # the command's config is read first: a valid one, so the file under test is next
        config = scratch / "valid.yaml"
        config.write_text(VALID_CONFIG)
        extra += ["--config", str(config)]
    with _no_hang():
        return run([*command.split(), option, str(file), *extra])


def _assert_one_message(code: int, stderr: str, option: str, file: Path, words: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert (WHAT[option] in stderr or f"'{option}'" in stderr) and str(file) in stderr, stderr
    assert words in stderr, stderr


def _not_text() -> st.SearchStrategy[tuple[bytes, str]]:
    with_nul = st.tuples(st.binary(max_size=30), st.binary(max_size=30)).map(
        lambda ab: (ab[0] + b"\0" + ab[1], "binary file")
    )
    text = st.text(max_size=20).filter(lambda t: "\0" not in t)
    bad = st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])  # never a start byte; a cut sequence; a surrogate
    not_utf8 = st.tuples(text, bad, text).map(
        lambda abc: (abc[0].encode() + abc[1] + abc[2].encode(), "not UTF-8 text")
    )
    blank = st.text(alphabet=" \t\r\n", max_size=20).map(lambda t: (t.encode(), "is empty"))
    return st.one_of(with_nul, not_utf8, blank)


@pytest.mark.parametrize(("command", "option"), FILE_OPTIONS, ids=IDS)
@settings(max_examples=12, deadline=None)
@given(content=_not_text())
def test_a_file_that_is_not_text_is_one_message(command: str, option: str, content: tuple[bytes, str]) -> None:
    data, words = content
    if option == "--properties-file" and words == "is empty":
        data, words = b"\xff", "not UTF-8 text"  # spark-submit reads an empty properties file as no properties
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "input"
        file.write_bytes(data)
        code, stderr = _run_with(command, option, file, Path(tmp))
        _assert_one_message(code, stderr, option, file, words)


@pytest.mark.parametrize(("command", "option"), FILE_OPTIONS, ids=IDS)
@pytest.mark.parametrize("kind", ["directory", "fifo", "device", "huge"])
def test_a_file_that_is_not_a_small_regular_file_is_one_message(
    command: str, option: str, kind: str, tmp_path: Path
) -> None:
    file = tmp_path / "input"
    if kind == "directory":
        file.mkdir()
        words = "is a directory"
    elif kind == "fifo":
        os.mkfifo(file)  # no writer: a blocking open would wait forever
        words = "is a FIFO"
    elif kind == "device":
        file = Path("/dev/zero")  # endless: a read to the end would never finish
        words = "is a device"
    else:
        with file.open("wb") as handle:
            handle.truncate(BOUND[option] + 1)  # sparse: one byte over the bound
        words = "is larger than"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    code, stderr = _run_with(command, option, file, scratch)
    _assert_one_message(code, stderr, option, file, words)


def _kubeconfig(tmp_path: Path, cluster: dict[str, str], user: dict[str, str]) -> Path:
    import yaml

    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1", **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))  # fmt: skip
    return path


@pytest.mark.parametrize("field", ["certificate-authority", "client-certificate", "client-key", "tokenFile"])
@pytest.mark.parametrize("kind", ["fifo", "binary", "directory"])
def test_a_file_a_kubeconfig_names_is_read_by_the_same_reader(field: str, kind: str, tmp_path: Path) -> None:
    named = tmp_path / "named"
    if kind == "fifo":
        os.mkfifo(named)  # ssl's own loaders would block on it
    elif kind == "binary":
        named.write_bytes(b"-----BEGIN\0")
    else:
        named.mkdir()
    good = tmp_path / "good.pem"
    good.write_text("-----BEGIN CERTIFICATE-----\n")  # read before the one under test, if it comes first
    fields = {"client-certificate": str(good), "client-key": str(good)} if field.startswith("client") else {}
    fields[field] = str(named)
    cluster = fields if field == "certificate-authority" else {}
    user = {} if field == "certificate-authority" else fields
    with _no_hang():
        code, stderr = run(["spark", "list", "--kubeconfig", str(_kubeconfig(tmp_path, cluster, user))])
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert field in stderr and str(named) in stderr, stderr
    assert {"fifo": "is a FIFO", "binary": "is a binary file", "directory": "is a directory"}[kind] in stderr


@pytest.mark.parametrize("role", ["driver", "executor"])
@pytest.mark.parametrize("kind", ["fifo", "binary", "directory"])
def test_a_pod_template_is_read_by_the_same_reader(role: str, kind: str, tmp_path: Path) -> None:
    template = tmp_path / "pod.yaml"
    if kind == "fifo":
        os.mkfifo(template)
    elif kind == "binary":
        template.write_bytes(b"kind: Pod\0")
    else:
        template.mkdir()
    key = f"spark.kubernetes.{role}.podTemplateFile"
    with _no_hang():
        code, stderr = run([
            "spark", "submit", "--kubeconfig", str(tmp_path / "absent"), *EXTRA["spark submit"][:4],
            "--conf", f"{key}={template}", "local:///a.py",
        ])  # fmt: skip
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert key in stderr and str(template) in stderr, stderr
    assert {"fifo": "is a FIFO", "binary": "binary file", "directory": "is a directory"}[kind] in stderr
