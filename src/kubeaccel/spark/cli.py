"""`kubeaccel spark`: submit, status, kill, logs, list, gc-uploads.

Exit codes (scriptable): 0 ok; 1 the app failed (`submit --wait`: the driver's own exit code);
2 bad input; 3 no app matches / not found; 4 API server unreachable; 5 forbidden by RBAC;
6 the app does not fit in the namespace's quota; 7 status/list/kill over many apps: some succeeded,
some failed (both listed); 124 `--wait-timeout` passed; 129 / 130 / 143 submit interrupted by
SIGHUP / SIGINT / SIGTERM (everything rolled back).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from kubeaccel.cliopts import BoundedFloat, PathParam, connection_options, echo_json, echo_table, output_option
from kubeaccel.errors import ConfigError
from kubeaccel.kube.client import Kube
from kubeaccel.spark import manage
from kubeaccel.spark.ids import SubmissionId, parse_target

if TYPE_CHECKING:
    from kubeaccel.spark.conf import SubmitRequest
    from kubeaccel.spark.model import ResolvedApp

# spark-submit flags that do not apply to Kubernetes cluster mode, and why (refused, never ignored)
REFUSED_FLAGS = {
    "proxy_user": (
        "--proxy-user",
        "impersonating a Hadoop proxy user needs Kerberos delegation tokens, which kubeaccel does not obtain; "
        "submit as that user, or use spark-submit",
    ),
    "supervise": (
        "--supervise",
        "restarting a failed driver is a standalone-cluster feature; use a Job or an operator",
    ),
    "total_executor_cores": ("--total-executor-cores", "standalone only; use --num-executors and --executor-cores"),
    "principal": ("--principal", "Kerberos login is not supported; use spark-submit for kerberized clusters"),
    "keytab": ("--keytab", "Kerberos login is not supported; use spark-submit for kerberized clusters"),
    "kill": ("--kill", "use `kubeaccel spark kill NAMESPACE:DRIVER-POD`"),
    "status": ("--status", "use `kubeaccel spark status NAMESPACE:DRIVER-POD`"),
}
KILL_GRACE_MAX_SECONDS = 24 * 3600

F = TypeVar("F", bound=Callable[..., Any])


@click.group()
def spark() -> None:
    """Submit and manage Spark applications on Kubernetes (cluster mode)."""


def _conf_option(help_: str) -> Callable[[F], F]:
    return click.option("--conf", "-c", "confs", multiple=True, metavar="KEY=VALUE", help=help_)


def _csv(value: str | None) -> tuple[str, ...]:
    from kubeaccel.spark.conf import split_list

    return tuple(split_list(value or ""))


@spark.command("submit", context_settings={"allow_interspersed_args": False})
@click.option("--master", help="k8s://https://HOST:PORT (default: spark.master from the confs).")
@click.option("--deploy-mode", default="cluster", show_default=True, help="Only cluster mode is supported.")
@click.option("--name", help="Application name (spark.app.name).")
@click.option("--class", "main_class", help="Main class of a JVM application.")
@_conf_option("A Spark conf; repeatable.")
@click.option("--properties-file", type=PathParam(dir_okay=False, path_type=Path), help="Spark properties file.")
@click.option("--jars", help="Comma-separated jars.")
@click.option("--files", help="Comma-separated files placed in the driver's and executors' working dirs.")
@click.option("--py-files", help="Comma-separated .py/.zip/.egg files for Python apps.")
@click.option("--archives", help="Comma-separated archives (file#alias) unpacked in the working dirs.")
@click.option("--driver-memory", help="spark.driver.memory, e.g. 4g.")
@click.option("--driver-cores", help="spark.driver.cores.")
@click.option("--executor-memory", help="spark.executor.memory, e.g. 8g.")
@click.option("--executor-cores", help="spark.executor.cores.")
@click.option("--num-executors", help="spark.executor.instances.")
@click.option("--packages", help="Comma-separated Maven coordinates group:artifact:version (spark.jars.packages).")
@click.option("--repositories", help="Comma-separated Maven repositories for --packages (spark.jars.repositories).")
@click.option("--exclude-packages", help="Comma-separated group:artifact to leave out (spark.jars.excludes).")
@click.option("--driver-class-path", help="spark.driver.extraClassPath.")
@click.option("--driver-java-options", help="spark.driver.extraJavaOptions.")
@click.option("--driver-library-path", help="spark.driver.extraLibraryPath.")
@click.option(
    "--gang", flag_value="true", default=None,
    help="All-or-nothing: the executors the app needs start together or not at all (spark.kubeaccel.gang.enabled; "
    "the core Workload API needs Kubernetes >= 1.37 with the GenericWorkload feature gate).",
)
@click.option(
    "--queue", metavar="NAME",
    help="Wait in this queue and be admitted as one gang (spark.kubeaccel.queue; Kueue's LocalQueue by default, "
    "see spark.kubeaccel.gang.scheduler).",
)
@click.option("--verbose", "-v", is_flag=True, help="Print the resolved conf to stderr before submitting.")
@click.option("--proxy-user", hidden=True)
@click.option("--supervise", is_flag=True, default=None, hidden=True)
@click.option("--total-executor-cores", hidden=True)
@click.option("--principal", hidden=True)
@click.option("--keytab", hidden=True)
@click.option("--kill", hidden=True)
@click.option("--status", hidden=True)
@click.option("--wait/--no-wait", default=False, help="Follow the app to its end; exit with the driver's code.")
@click.option(
    "--wait-timeout", type=BoundedFloat(), default=None, help="With --wait: give up after SECONDS (exit 124)."
)
@click.option("--no-preflight", is_flag=True, help="Skip the namespace quota check.")
@click.option(
    "--emit-application", is_flag=True, help="Print the equivalent SparkApplication YAML instead of submitting."
)
@connection_options
@output_option
@click.argument("app_resource")
@click.argument("app_args", nargs=-1, type=click.UNPROCESSED)
def submit_command(
    *,
    master: str | None,
    deploy_mode: str,
    name: str | None,
    main_class: str | None,
    confs: tuple[str, ...],
    properties_file: Path | None,
    jars: str | None,
    files: str | None,
    py_files: str | None,
    archives: str | None,
    verbose: bool,
    wait: bool,
    wait_timeout: float | None,
    no_preflight: bool,
    emit_application: bool,
    kubeconfig: str | None,
    context: str | None,
    output: str,
    app_resource: str,
    app_args: tuple[str, ...],
    **flags: str | None,
) -> None:
    """Submit APP_RESOURCE [APP_ARGS]... in cluster mode; prints the submission ID NAMESPACE:DRIVER-POD.

    \b
    Example:
      kubeaccel spark submit --master k8s://https://10.0.0.1:6443 --name etl \\
        --conf spark.kubernetes.container.image=docker.io/kubeaccel/spark:TAG \\
        --conf spark.kubernetes.namespace=team-a \\
        --conf spark.executor.resource.ve.amount=1 --conf spark.executor.resource.ve.vendor=nec.com \\
        --conf spark.executor.resource.ve.discoveryScript=/usr/local/bin/kubeaccel-discover \\
        local:///opt/spark/examples/src/main/python/pi.py 100
    """
    request = _request(
        app_resource, app_args, master=master, deploy_mode=deploy_mode, name=name, main_class=main_class,
        confs=confs, properties_file=properties_file, jars=jars, files=files, py_files=py_files, archives=archives,
        flags=flags,
    )  # fmt: skip
    if emit_application:
        import yaml

        from kubeaccel.spark.emit import application_for

        click.echo(yaml.safe_dump(application_for(request), sort_keys=False), nl=False)
        return
    # imported here, not at the top: status/kill/list need neither the submit path nor fsspec's
    from kubeaccel.spark.model import resolve

    app = resolve(request)
    if verbose:
        for key, value in sorted(app.conf.items()):
            click.echo(f"(spark.properties) {key}={value}", err=True)
    sid = _submit(app, context=context, kubeconfig=kubeconfig, preflight=not no_preflight, output=output)
    if wait:
        _wait_and_exit(app, sid, context=context, kubeconfig=kubeconfig, timeout=wait_timeout)


def _request(
    app_resource: str,
    app_args: tuple[str, ...],
    *,
    confs: tuple[str, ...],
    jars: str | None,
    files: str | None,
    py_files: str | None,
    archives: str | None,
    flags: dict[str, str | None],
    **fields: Any,
) -> SubmitRequest:
    """The command line as a `SubmitRequest`; a spark-submit flag with no meaning on Kubernetes is refused."""
    for flag, (option, reason) in REFUSED_FLAGS.items():
        if flags.get(flag) is not None:
            raise ConfigError(f"{option} does not apply to Kubernetes cluster mode", hint=reason)
    from kubeaccel.spark.conf import FLAG_CONFS, SubmitRequest, parse_conf_pairs

    return SubmitRequest(
        app_resource=app_resource,
        app_args=app_args,
        conf=parse_conf_pairs(confs),
        jars=_csv(jars),
        files=_csv(files),
        py_files=_csv(py_files),
        archives=_csv(archives),
        flag_conf={key: value for flag, key in FLAG_CONFS.items() if (value := flags.get(flag)) is not None},
        **fields,
    )


def _submit(
    app: ResolvedApp, *, context: str | None, kubeconfig: str | None, preflight: bool, output: str
) -> SubmissionId:
    """Submit, printing the ID as soon as the driver exists (before the owned objects: see `submit`)."""
    from kubeaccel.spark.rollback import RollbackIncompleteError
    from kubeaccel.spark.submit import submit

    def announce(sid: SubmissionId) -> None:
        if output == "json":
            echo_json({"id": str(sid), "namespace": sid.namespace, "driver_pod": sid.pod})
        else:
            click.echo(str(sid))

    progress = _progress if output == "table" and sys.stderr.isatty() else None
    try:
        return submit(app, context=context, kubeconfig=kubeconfig, check_quota=preflight, progress=progress,
                      on_submitted=announce)  # fmt: skip
    except RollbackIncompleteError as exc:
        if output == "json":
            echo_json(exc.as_dict())
        raise


def _wait_and_exit(
    app: ResolvedApp, sid: SubmissionId, *, context: str | None, kubeconfig: str | None, timeout: float | None
) -> None:
    """`--wait`: follow the driver to its end and exit with its code (130 when Ctrl-C stops the waiting)."""
    from kubeaccel.spark.submit import connect_for

    kube = connect_for(app, context=context, kubeconfig=kubeconfig)
    try:
        code = wait_for(kube, sid, timeout)
    except KeyboardInterrupt:  # Ctrl-C stops the waiting, not the app
        click.echo(f"stopped waiting; {sid} keeps running (kubeaccel spark kill {sid} stops it)", err=True)
        code = 130
    sys.exit(code)


def wait_for(kube: Kube, sid: SubmissionId, timeout: float | None = None) -> int:
    from kubeaccel.spark.submit import wait

    def retrying(error: Exception, pause: float) -> None:
        click.echo(f"{sid}: {error} (retrying in {pause:.1f}s)", err=True)

    code = wait(
        kube,
        sid,
        on_change=lambda phase: click.echo(f"{sid}: {phase}", err=True),
        timeout=timeout,
        on_retry=retrying,
    )
    click.echo(f"{sid}: driver exited with code {code}", err=True)
    return code


def _grace_seconds(raw: str) -> int:
    """spark.kubernetes.appKillPodDeletionGracePeriod: whole seconds, `30` or `30s`, at most a day."""
    import re

    key = "spark.kubernetes.appKillPodDeletionGracePeriod"
    match = re.fullmatch(r"\s*([0-9]{1,6})\s*s?\s*", raw)
    if not match or int(match.group(1)) > KILL_GRACE_MAX_SECONDS:
        raise ConfigError(
            f"{key}={raw[:50]!r} is not whole seconds from 0 to {KILL_GRACE_MAX_SECONDS}", hint=f"e.g. {key}=30s"
        )
    return int(match.group(1))


def _progress(name: str, sent: int, total: int) -> None:
    percent = 100 * sent // total if total else 100
    click.echo(f"\ruploading {name}: {percent}%", err=True, nl=sent >= total)


def _connect(kubeconfig: str | None, context: str | None) -> Kube:
    return Kube.connect(kubeconfig=kubeconfig, context=context)


def _table(apps: list[manage.AppStatus]) -> None:
    echo_table(
        ("ID", "APP", "PHASE", "EXECUTORS", "NODE", "STARTED", "REASON"),
        (
            (
                app.id,
                app.app_name,
                app.phase,
                f"{app.executors_running}/{app.executors}",
                app.node or "-",
                app.start or "-",
                app.reason or "-",
            )
            for app in apps
        ),
    )


@spark.command("status")
@click.argument("target")
@click.option("--devices", "with_devices", is_flag=True,
              help="Also the exact devices each driver and executor holds (the addresses discovery gave Spark).")
@connection_options
@output_option
def status_command(target: str, kubeconfig: str | None, context: str | None, output: str,
                   with_devices: bool) -> None:
    """Status of the app(s) TARGET: NAMESPACE:DRIVER-POD, DRIVER-POD, or a glob like team-a:etl-*.

    Without a namespace: the context's namespace, else all namespaces. Exit code 3 when nothing matches;
    with --devices, 7 when a plugin that may hold some of the apps' devices did not answer.
    """
    parsed = parse_target(target)  # bad IDs fail before any connection is made
    kube = _connect(kubeconfig, context)
    outcome = manage.status_report(kube, parsed)
    shown = None
    if with_devices and outcome.done:
        from kubeaccel.view.cli import app_devices_report

        shown = app_devices_report(kube, outcome.done, output)
    if output == "json":
        report = _report_json("apps", [app.as_dict() for app in outcome.done], outcome)
        echo_json(report if shown is None else {**report, **shown.json})
    else:
        _table(outcome.done)
        if shown is not None:
            shown.echo()
    _exit_for_failures(outcome, "read")
    if shown is not None and shown.partial:
        sys.exit(shown.exit_code)


@spark.command("list")
@click.option("--namespace", "-n", help="Only this namespace (default: the context's, else all; '*' = all).")
@click.option("--phase", help="Only apps in this phase (Pending, Running, Succeeded, Failed).")
@click.option("--name", "name_glob", default="*", show_default=True, help="Glob on the driver pod name.")
@connection_options
@output_option
def list_command(
    *,
    namespace: str | None,
    phase: str | None,
    name_glob: str,
    kubeconfig: str | None,
    context: str | None,
    output: str,
) -> None:
    """List Spark applications (their driver pods)."""
    target = parse_target(f"{namespace}:{name_glob}" if namespace else name_glob)
    outcome = manage.list_report(
        _connect(kubeconfig, context), namespace=target.namespace, phase=phase, name=target.pattern
    )
    if output == "json":
        echo_json(_report_json("apps", [app.as_dict() for app in outcome.done], outcome))
    elif outcome.done:
        _table(outcome.done)
    elif not outcome.failed:
        click.echo("no Spark applications found", err=True)
    _exit_for_failures(outcome, "read")


@spark.command("kill")
@click.argument("target")
@click.option(
    "--grace-period",
    type=click.IntRange(min=0, max=KILL_GRACE_MAX_SECONDS),
    default=None,
    help="Seconds before the driver is killed (default: spark.kubernetes.appKillPodDeletionGracePeriod, else 30).",
)
@_conf_option("Spark confs (spark.kubernetes.appKillPodDeletionGracePeriod, spark.kubernetes.context).")
@connection_options
@output_option
def kill_command(
    *,
    target: str,
    grace_period: int | None,
    confs: tuple[str, ...],
    kubeconfig: str | None,
    context: str | None,
    output: str,
) -> None:
    """Kill the app(s) TARGET (ID or glob); executors, Service and ConfigMaps follow their driver."""
    from kubeaccel.spark.conf import parse_conf_pairs  # here: status and list need none of the conf grammar

    conf = parse_conf_pairs(confs)
    if grace_period is None and "spark.kubernetes.appKillPodDeletionGracePeriod" in conf:
        grace_period = _grace_seconds(conf["spark.kubernetes.appKillPodDeletionGracePeriod"])
    parsed = parse_target(target)
    kube = _connect(kubeconfig, context or conf.get("spark.kubernetes.context"))
    outcome = manage.kill(kube, parsed, grace_period=grace_period)
    if output == "json":
        echo_json(_report_json("killed", [str(sid) for sid in outcome.done], outcome))
    else:
        for sid in outcome.done:
            click.echo(f"killed {sid}")
    _exit_for_failures(outcome, "kill")


def _report_json(key: str, done: list[Any], outcome: manage.Outcome[Any]) -> dict[str, Any]:
    return {key: done, "failed": [failure.as_dict() for failure in outcome.failed]}


def _exit_for_failures(outcome: manage.Outcome[Any], verb: str) -> None:
    """Every failure on stderr, one line each, then the documented exit code (7 when some succeeded)."""
    if not outcome.failed:
        return
    for failure in outcome.failed:
        click.secho(f"error: could not {verb} {failure.id}: {failure.error}", fg="red", err=True)
    done = len(outcome.done)
    click.echo(
        f"  {done} succeeded, {len(outcome.failed)} failed"
        + ("; exit code 7 = partial failure" if outcome.exit_code == manage.PARTIAL_EXIT_CODE else ""),
        err=True,
    )
    sys.exit(outcome.exit_code)


@spark.command("logs")
@click.argument("target")
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until the driver ends.")
@click.option(
    "--tail", "tail_lines", type=click.IntRange(min=0, max=10**7), default=None, help="Only the last N lines."
)
@connection_options
def logs_command(
    target: str, follow: bool, tail_lines: int | None, kubeconfig: str | None, context: str | None
) -> None:
    """Print the driver log of one app (also after it ended: the driver pod is kept)."""
    parsed = parse_target(target)
    for line in manage.logs(_connect(kubeconfig, context), parsed, follow=follow, tail_lines=tail_lines):
        click.echo(line, nl=False)


@spark.command("gc-uploads")
@click.option("--upload-path", required=True, help="spark.kubernetes.file.upload.path, e.g. s3a://bucket/uploads.")
@click.option("--older-than", default="7d", show_default=True, help="Age: 90s, 30m, 12h, 7d, 2w.")
@_conf_option("Store confs, e.g. spark.hadoop.fs.s3a.endpoint=http://minio:9000.")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@output_option
def gc_uploads_command(upload_path: str, older_than: str, confs: tuple[str, ...], dry_run: bool, output: str) -> None:
    """Remove spark-upload-* directories older than --older-than (Spark never removes them)."""
    from kubeaccel.spark import uploads
    from kubeaccel.spark.conf import parse_conf_pairs

    age = uploads.parse_age(older_than)
    removed = uploads.gc_uploads(upload_path, age, parse_conf_pairs(confs), dry_run=dry_run)
    if output == "json":
        echo_json(
            [{"url": d.url, "modified": d.modified.isoformat(), "files": d.files, "bytes": d.size} for d in removed]
        )
        return
    verb = "would remove" if dry_run else "removed"
    for directory in removed:
        click.echo(
            f"{verb} {directory.url} ({directory.files} files, {directory.size} bytes, "
            f"last written {directory.modified:%Y-%m-%d %H:%M})"
        )
    if not removed:
        click.echo(f"nothing older than {older_than} under {upload_path}", err=True)
