"""Entrypoint of the kubeaccel Spark image: ``driver`` and ``executor`` as Spark's Kubernetes backend
invokes them, anything else is run as given.

Spark's Kubernetes scheduler starts the driver container with the arguments
``driver --properties-file ... --class ... <app> <args>`` and the environment
``SPARK_DRIVER_BIND_ADDRESS`` (the pod IP); executors get ``executor`` and ``SPARK_DRIVER_URL``,
``SPARK_EXECUTOR_ID``, ``SPARK_EXECUTOR_CORES``, ``SPARK_EXECUTOR_MEMORY``,
``SPARK_APPLICATION_ID``, ``SPARK_EXECUTOR_POD_IP``, ``SPARK_EXECUTOR_POD_NAME``,
``SPARK_RESOURCE_PROFILE_ID`` and the JVM options as ``SPARK_JAVA_OPT_0..N``. We build the same
commands as Spark's own image, and ``exec`` them so the JVM gets the signals (tini is PID 1).

Stdlib only and importable: ``build_command`` is pure so the image's behaviour is unit-tested on
the host. A missing variable is an error naming it, not a JVM that fails later on "null".
"""

from __future__ import annotations

import os
import pwd
import re
import sys
from collections.abc import Mapping, MutableMapping, Sequence

EXECUTOR_ENV = (
    "SPARK_DRIVER_URL",
    "SPARK_EXECUTOR_ID",
    "SPARK_EXECUTOR_CORES",
    "SPARK_EXECUTOR_MEMORY",
    "SPARK_APPLICATION_ID",
    "SPARK_EXECUTOR_POD_IP",
)
DRIVER_HOST_ENV = "KUBEACCEL_DRIVER_HOST"
_JAVA_OPT_RE = re.compile(r"^SPARK_JAVA_OPT_(\d+)$")


class EntrypointError(Exception):
    """The container was started without what its mode needs."""


def java_opts(env: Mapping[str, str]) -> list[str]:
    """``SPARK_JAVA_OPT_<n>`` values in numeric order (``_10`` after ``_9``)."""
    numbered = [(int(m.group(1)), value) for key, value in env.items() if (m := _JAVA_OPT_RE.match(key))]
    return [value for _, value in sorted(numbered)]


def classpath(env: Mapping[str, str]) -> str:
    """Conf dirs first (so ``spark.properties``/log4j there win), then Spark's jars, then extras."""
    spark_home = env.get("SPARK_HOME", "/opt/spark")
    parts = [env.get("SPARK_CONF_DIR") or f"{spark_home}/conf"]
    if env.get("HADOOP_CONF_DIR"):
        parts.append(env["HADOOP_CONF_DIR"])
    if env.get("SPARK_CLASSPATH"):
        parts.append(env["SPARK_CLASSPATH"])
    parts.append(f"{spark_home}/jars/*")
    for extra in ("SPARK_EXTRA_CLASSPATH", "SPARK_DIST_CLASSPATH"):
        if env.get(extra):
            parts.append(env[extra])
    return ":".join(parts)


def build_command(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The command to ``exec`` for the container arguments ``argv`` (without the program name)."""
    if not argv:
        raise EntrypointError("no command: expected 'driver', 'executor' or a command to run")
    mode, rest = argv[0], list(argv[1:])
    spark_home = env.get("SPARK_HOME", "/opt/spark")
    if mode == "driver":
        bind = env.get("SPARK_DRIVER_BIND_ADDRESS")
        if not bind:
            raise EntrypointError("driver mode needs SPARK_DRIVER_BIND_ADDRESS (Spark sets it to the pod IP)")
        command = [f"{spark_home}/bin/spark-submit", "--conf", f"spark.driver.bindAddress={bind}"]
        # Executors reach the driver at spark.driver.host, which Spark sets to the driver Service's DNS
        # name. Clusters without cluster DNS (or pods on the host network) can have executors dial
        # the driver pod's IP instead: spark.kubernetes.driverEnv.KUBEACCEL_DRIVER_HOST=pod-ip.
        # A --conf here wins over the properties file Spark mounts.
        advertised = env.get(DRIVER_HOST_ENV, "")
        if advertised:
            command += ["--conf", f"spark.driver.host={bind if advertised == 'pod-ip' else advertised}"]
        return [*command, "--deploy-mode", "client", *rest]
    if mode == "executor":
        missing = [name for name in EXECUTOR_ENV if not env.get(name)]
        if missing:
            raise EntrypointError(f"executor mode needs {', '.join(missing)} (Spark's driver sets them)")
        java_home = env.get("JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64")
        memory = env["SPARK_EXECUTOR_MEMORY"]
        return [
            f"{java_home}/bin/java",
            *java_opts(env),
            f"-Xms{memory}",
            f"-Xmx{memory}",
            "-cp",
            classpath(env),
            "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend",
            *("--driver-url", env["SPARK_DRIVER_URL"]),
            *("--executor-id", env["SPARK_EXECUTOR_ID"]),
            *("--cores", env["SPARK_EXECUTOR_CORES"]),
            *("--app-id", env["SPARK_APPLICATION_ID"]),
            *("--hostname", env["SPARK_EXECUTOR_POD_IP"]),
            *("--resourceProfileId", env.get("SPARK_RESOURCE_PROFILE_ID", "0")),
            *(("--podName", env["SPARK_EXECUTOR_POD_NAME"]) if env.get("SPARK_EXECUTOR_POD_NAME") else ()),
            *rest,
        ]
    return [mode, *rest]


WORK_DIR = "/opt/spark/work-dir"


def ensure_passwd_entry(passwd_file: str = "/etc/passwd") -> None:
    """Java and Hadoop need a user name; an arbitrary UID (OpenShift-style) has none, so add one."""
    uid = os.getuid()
    try:
        pwd.getpwuid(uid)
        return
    except KeyError:
        pass
    if os.access(passwd_file, os.W_OK):
        # a home the user may write: Ivy (`--packages`) keeps its cache in ~/.ivy2.5.2
        home = WORK_DIR if os.access(WORK_DIR, os.W_OK) else "/tmp"
        user = os.environ.get("SPARK_USER_NAME", "anonymous uid")
        with open(passwd_file, "a", encoding="utf-8") as fh:
            fh.write(f"{uid}:x:{uid}:{os.getgid()}:{user}:{home}:/bin/false\n")


# Spark's driver step always sets these two, with no value when no conf names an interpreter; Spark's
# PythonRunner would then try to run "" (the official image's entrypoint only exports them when non-empty).
PYTHON_VARIABLES = ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")


def drop_empty_python_variables(env: MutableMapping[str, str]) -> None:
    for name in PYTHON_VARIABLES:
        if name in env and not env[name].strip():
            del env[name]


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    drop_empty_python_variables(os.environ)
    try:
        command = build_command(args, os.environ)
    except EntrypointError as exc:
        sys.stderr.write(f"kubeaccel entrypoint: {exc}\n")
        raise SystemExit(2) from None
    ensure_passwd_entry()
    if args and args[0] not in ("driver", "executor"):
        sys.stderr.write("kubeaccel entrypoint: not a Spark mode, running the command as given\n")
    sys.stderr.write(f"kubeaccel entrypoint: exec {' '.join(command)}\n")
    sys.stderr.flush()
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"kubeaccel entrypoint: cannot run {command[0]}: {exc.strerror}\n")
        raise SystemExit(127) from None


if __name__ == "__main__":
    main()
