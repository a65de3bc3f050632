"""Discovery script: where addresses come from, in order, and what happens when there are none.

Matrix: our variable / native VE / native NVIDIA / backend probe; resource named by argument, by
env, or inferred from the single variable; bad input (no variable, several, bad resource name,
unknown argument) through the pure core, the console script and the click command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from fixtures.ve import FakeVETree
from hypothesis import given
from hypothesis import strategies as st

from kubeaccel.cli import cli
from kubeaccel.errors import ConfigError, NotFoundError
from kubeaccel.spark import discover as d

VE_VAR = "KUBEACCEL_DEVICES_NEC_COM_VE"
SIM_VAR = "KUBEACCEL_DEVICES_EXAMPLE_COM_SIM"
SCRIPT = Path(sys.executable).with_name("kubeaccel-discover")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBEACCEL_", "VE_", "_VENODE", "NVIDIA_"))}
    env.update(extra)
    return env


def _never_probe(resource: str, backend: str) -> list[str]:
    raise AssertionError("must not probe when a variable names the devices")


@pytest.mark.parametrize(
    ("resource", "env", "expected", "source"),
    [
        ("nec.com/ve", {"KUBEACCEL_DEVICES_NEC_COM_VE": "1,3"}, ("1", "3"), "KUBEACCEL_DEVICES_NEC_COM_VE"),
        ("nec.com/ve", {"KUBEACCEL_DEVICES_NEC_COM_VE": " 3 , 1,,3 "}, ("3", "1"), "KUBEACCEL_DEVICES_NEC_COM_VE"),
        ("nec.com/ve", {"_VENODELIST": "2 5", "VE_NODE_NUMBER": "5"}, ("2", "5"), "_VENODELIST"),
        ("nec.com/ve", {"VE_NODE_NUMBER": "4"}, ("4",), "VE_NODE_NUMBER"),
        # ours wins over the native one, even when both are set
        ("nec.com/ve", {"KUBEACCEL_DEVICES_NEC_COM_VE": "0", "_VENODELIST": "7"}, ("0",), VE_VAR),
        # A container sees its GPUs renumbered from 0: host GPUs 0 and 2 are CUDA devices 0 and 1.
        ("nvidia.com/gpu", {"NVIDIA_VISIBLE_DEVICES": "0,2"}, ("0", "1"), "NVIDIA_VISIBLE_DEVICES"),
        ("nvidia.com/gpu", {"NVIDIA_VISIBLE_DEVICES": "GPU-a,GPU-b,GPU-c"}, ("0", "1", "2"), "NVIDIA_VISIBLE_DEVICES"),
        ("nvidia.com/gpu", {"KUBEACCEL_DEVICES_NVIDIA_COM_GPU": "3"}, ("0",), "KUBEACCEL_DEVICES_NVIDIA_COM_GPU"),
        ("example.com/sim", {"KUBEACCEL_DEVICES_EXAMPLE_COM_SIM": "sim-1"}, ("sim-1",), SIM_VAR),
    ],
)
def test_addresses_from_variables(resource: str, env: dict[str, str], expected: tuple[str, ...], source: str) -> None:
    found = d.resolve(resource, env, probe=_never_probe)
    assert found.addresses == expected
    assert found.source == source
    assert found.name == resource.rsplit("/", 1)[1]


def test_empty_own_variable_falls_back_to_native() -> None:
    found = d.resolve("nec.com/ve", {"KUBEACCEL_DEVICES_NEC_COM_VE": "", "VE_NODE_NUMBER": "1"}, probe=_never_probe)
    assert found.addresses == ("1",)


def test_nvidia_all_probes_the_backend() -> None:
    calls: list[tuple[str, str]] = []

    def probe(resource: str, backend: str) -> list[str]:
        calls.append((resource, backend))
        return ["0", "1"]

    found = d.resolve("nvidia.com/gpu", {"NVIDIA_VISIBLE_DEVICES": "all"}, probe=probe)
    assert found.addresses == ("0", "1")
    assert calls == [("nvidia.com/gpu", "nvidia")]
    assert found.source.startswith("probe:nvidia")


def test_nvidia_none_is_not_an_address() -> None:
    with pytest.raises(NotFoundError, match="found no healthy devices"):
        d.resolve("nvidia.com/gpu", {"NVIDIA_VISIBLE_DEVICES": "void"}, probe=lambda r, b: [])


def test_probe_failure_is_reported_with_what_was_looked_at() -> None:
    def probe(resource: str, backend: str) -> list[str]:
        raise NotFoundError("no /dev/veslot* here")

    with pytest.raises(NotFoundError) as info:
        d.resolve("nec.com/ve", {}, probe=probe)
    assert "KUBEACCEL_DEVICES_NEC_COM_VE" in info.value.message
    assert "_VENODELIST" in info.value.message
    assert "no /dev/veslot* here" in info.value.message
    assert info.value.hint and "spark.executor.resource.ve.amount" in info.value.hint


def test_real_probe_on_this_host_finds_no_ve() -> None:
    # No VE on CI hosts: whether or not the ve backend is installed, the answer is a clear NotFoundError.
    with pytest.raises(NotFoundError):
        d.resolve("nec.com/ve", {})


def test_probe_finds_the_healthy_ves_of_a_node(tmp_path: Path) -> None:
    # A bare-metal standalone worker: no variables, so the VE backend probes /dev and /sys (a fake
    # tree here, laid out as the ve_drv module does). VE addresses are slot numbers.
    tree = FakeVETree(tmp_path)
    for node, slot, os_state in ((0, 3, 0), (1, 1, 0), (2, 0, 1)):  # ve2 (slot 0) is OFFLINE
        tree.add(node, slot, os_state=os_state, ve_state=None)
    done = _run(["nec.com/ve"], _clean_env(**{d.ROOT_ENV: str(tmp_path)}))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"name": "ve", "addresses": ["1", "3"]}


def test_family_without_probe_says_nothing_allocated() -> None:
    with pytest.raises(NotFoundError, match=r"no example\.com/sim devices"):
        d.resolve("example.com/sim", {"KUBEACCEL_DEVICES_NEC_COM_VE": "1"})


def test_resource_inferred_from_the_single_variable() -> None:
    found = d.resolve(None, {"KUBEACCEL_DEVICES_NEC_COM_VE": "2", "PATH": "/bin"})
    assert found == d.Discovery("ve", ("2",), "KUBEACCEL_DEVICES_NEC_COM_VE")


def test_resource_and_name_from_env() -> None:
    env = {
        "KUBEACCEL_DEVICES_NEC_COM_VE": "2",
        "KUBEACCEL_DEVICES_EXAMPLE_COM_SIM": "0",
        d.RESOURCE_ENV: "example.com/sim",
        d.NAME_ENV: "accel",
    }
    assert d.resolve(None, env) == d.Discovery("accel", ("0",), "KUBEACCEL_DEVICES_EXAMPLE_COM_SIM")


def test_several_variables_and_no_resource_is_ambiguous() -> None:
    env = {"KUBEACCEL_DEVICES_NEC_COM_VE": "2", "KUBEACCEL_DEVICES_NVIDIA_COM_GPU": "0"}
    with pytest.raises(ConfigError, match="several allocated resources") as info:
        d.resolve(None, env)
    assert info.value.hint and "--write-script" in info.value.hint


def test_nothing_at_all() -> None:
    with pytest.raises(NotFoundError, match="no devices allocated"):
        d.resolve(None, {"PATH": "/bin"})
    with pytest.raises(NotFoundError, match="set but empty"):
        d.resolve(None, {"KUBEACCEL_DEVICES_NEC_COM_VE": " , "})


@pytest.mark.parametrize("bad", ["ve", "nec.com/", "/ve", "NEC.COM/ve", "kubernetes.io/ve"])
def test_bad_resource_name(bad: str) -> None:
    with pytest.raises(ConfigError, match="not an extended resource name"):
        d.resolve(bad, {"KUBEACCEL_DEVICES_NEC_COM_VE": "1"})


@given(st.lists(st.text(alphabet="0123456789abcdef-:", min_size=1, max_size=12), max_size=10))
def test_split_round_trips_our_format(addresses: list[str]) -> None:
    unique = list(dict.fromkeys(addresses))
    assert d.split_addresses(",".join(addresses)) == tuple(unique)
    assert d.split_addresses(" ".join(addresses), " ") == tuple(unique)


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=30, check=False)


def test_console_script_prints_spark_json_with_no_arguments() -> None:
    done = _run([], _clean_env(KUBEACCEL_DEVICES_NEC_COM_VE="1,3"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"name": "ve", "addresses": ["1", "3"]}
    assert done.stderr == ""


def test_console_script_fails_loudly_when_nothing_is_allocated() -> None:
    done = _run(["example.com/sim"], _clean_env())
    assert done.returncode == NotFoundError.exit_code
    assert done.stdout == ""
    assert "no example.com/sim devices allocated" in done.stderr
    assert "hint:" in done.stderr
    assert "Traceback" not in done.stderr


def test_console_script_rejects_unknown_arguments() -> None:
    done = _run(["nec.com/ve", "--bogus"], _clean_env(KUBEACCEL_DEVICES_NEC_COM_VE="1"))
    assert done.returncode == ConfigError.exit_code
    assert "unexpected argument '--bogus'" in done.stderr


def test_written_script_is_what_spark_runs(tmp_path: Path) -> None:
    script = tmp_path / "discover-sim.sh"
    d.write_script(str(script), "example.com/sim", name="sim")
    env = _clean_env(KUBEACCEL_DEVICES_EXAMPLE_COM_SIM="0,2", KUBEACCEL_DEVICES_NEC_COM_VE="1")
    # Spark executes the file with no arguments from some working directory.
    done = subprocess.run([str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"name": "sim", "addresses": ["0", "2"]}


def test_write_script_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot write"):
        d.write_script(str(tmp_path / "missing" / "x.sh"), "nec.com/ve")
    with pytest.raises(ConfigError, match="not an extended resource name"):
        d.write_script(str(tmp_path / "x.sh"), "ve")


def test_cli_discover_command(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(cli, ["discover", "nec.com/ve"], env={"KUBEACCEL_DEVICES_NEC_COM_VE": "5"})
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout) == {"name": "ve", "addresses": ["5"]}

    script = tmp_path / "d.sh"
    wrote = runner.invoke(cli, ["discover", "nec.com/ve", "--write-script", str(script)])
    assert wrote.exit_code == 0, wrote.output
    assert os.access(script, os.X_OK)

    missing = runner.invoke(cli, ["discover", "--write-script", str(script)])
    assert missing.exit_code == 2
    assert "--write-script needs RESOURCE" in missing.output


def test_cli_prints_error_without_traceback() -> None:
    env = _clean_env()
    done = subprocess.run(
        [str(SCRIPT.with_name("kubeaccel")), "discover", "example.com/sim"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == NotFoundError.exit_code
    assert "error: no example.com/sim devices allocated" in done.stderr
    assert "Traceback" not in done.stderr


def test_console_script_does_not_import_heavy_modules() -> None:
    # It runs at every executor start: click, pydantic and the device model stay out of its path.
    code = (
        "import sys; from kubeaccel.spark.discover import main; main(['nec.com/ve']); "
        "print(sorted(m for m in ('click', 'pydantic', 'grpc', 'lightkube', 'kubeaccel.devices.model') "
        "if m in sys.modules), file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=_clean_env(KUBEACCEL_DEVICES_NEC_COM_VE="1"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.stderr.strip() == "[]"


def test_gpus_are_renumbered_when_the_resource_is_inferred_too() -> None:
    # What Spark's tasks address is the container's view: its GPUs count from 0.
    found = d.resolve(None, {"KUBEACCEL_DEVICES_NVIDIA_COM_GPU": "5,2"}, probe=_never_probe)
    assert found.addresses == ("0", "1") and found.name == "gpu"
