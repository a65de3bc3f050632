"""``up``, ``down`` and ``status`` of a local cluster: start the processes in order, wait until usable, tear down.

Data is wiped only by ``down`` or ``up --fresh``. ``up`` on a cluster with dead parts repairs it in place:
it restarts exactly the dead processes with the recorded ports, certificates and etcd data (and the real
node, if it had one). A failed first ``up`` stops whatever it started (never half-started processes left
running) and keeps the logs for the error message; a state dir whose first ``up`` never completed (no
state.json) holds no data and is cleaned before starting. A supervisor process (supervisor.py) restarts
control-plane processes that die while the cluster runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kubeaccel.cluster import api, commands, hostclean, kwok, process, supervisor
from kubeaccel.cluster.binaries import CONTROL_PLANE, Binaries, locate
from kubeaccel.cluster.commands import Ports
from kubeaccel.cluster.layout import Layout
from kubeaccel.cluster.lock import locked
from kubeaccel.cluster.ports import free_soon, pick_free, require_free
from kubeaccel.cluster.spec import ClusterSpec
from kubeaccel.cluster.state import CREATED, ClusterState, remove_created, write_control_plane_files
from kubeaccel.cluster.versions import KUBE_VERSION
from kubeaccel.errors import ConfigError, KubeaccelError, NotFoundError, UnavailableError

Progress = Callable[[str], None]

CONTROL_PLANE_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
APISERVER_TIMEOUT = 90.0
USABLE_TIMEOUT = 90.0
REPAIR_ATTEMPTS = 3
# `down` waits out a supervisor restart or a short command on the same state dir rather than leave all running.
DOWN_LOCK_WAIT = 30.0
# Every program a cluster runs with its state dir in its arguments (the supervisor is matched by its module).
PROGRAMS = ("etcd", *CONTROL_PLANE, "containerd", "kubelet", "containerd-shim-runc-v2")
STRAY_GRACE = 3.0  # after SIGTERM, then as long again after SIGKILL


@dataclass
class ClusterInfo:
    state_dir: Path
    kubeconfig: Path
    server: str
    nodes: list[str]
    real_node: str | None
    version: str
    already_running: bool = False
    components: dict[str, bool] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    # What a repairing `up` restarted (empty for a fresh or a healthy cluster).
    repaired: list[str] = field(default_factory=list)


def _info(
    layout: Layout, state: ClusterState, already_running: bool = False, repaired: list[str] | None = None
) -> ClusterInfo:
    recorded = process.records(layout)
    return ClusterInfo(
        state_dir=layout.root,
        kubeconfig=layout.kubeconfig,
        server=state.server,
        nodes=list(state.nodes),
        real_node=state.real_node,
        version=state.version,
        already_running=already_running,
        components={r.name: r.alive() for r in recorded},
        restarts={r.name: r.restarts for r in recorded},
        repaired=list(repaired or []),
    )


def _quiet(_: str) -> None:
    pass


def _ports(spec: ClusterSpec) -> Ports:
    fixed = set()
    if spec.apiserver_port:
        fixed.add(require_free(spec.apiserver_port, "--apiserver-port"))
    if spec.etcd_port:
        fixed.add(require_free(spec.etcd_port, "--etcd-port"))
    free = iter(pick_free(3, exclude=fixed))
    return Ports(
        etcd_client=spec.etcd_port or next(free),
        etcd_peer=next(free),
        apiserver=spec.apiserver_port or next(free),
    )


def _healthy(layout: Layout, state: ClusterState) -> bool:
    recorded = process.records(layout)
    if not recorded or not all(r.alive() for r in recorded):
        return False
    return api.readyz(layout, state.ports["apiserver"])


def _fail_if_dead(layout: Layout, names: tuple[str, ...]) -> Callable[[], None]:
    def check() -> None:
        for name in names:
            record = process.read_record(layout, name)
            if record is not None and not record.alive():
                tail = process.log_tail(layout, name)
                raise UnavailableError(
                    f"{name} exited during start-up; last lines of {layout.log(name)}:\n{tail}",
                    hint="fix the cause shown above, then run `kubeaccel cluster up` again",
                )

    return check


def up(spec: ClusterSpec, progress: Progress = _quiet) -> ClusterInfo:
    """Bring the cluster described by ``spec`` up in ``spec.state_dir``.

    A healthy one is reused, one with dead parts is repaired in place (data, certificates and ports kept);
    only ``spec.fresh`` replaces an existing cluster.
    """
    layout = Layout(spec.state_dir)
    with locked(layout):
        existing = ClusterState.load(layout, strict=not spec.fresh)
        if existing is not None and spec.fresh:
            progress(f"--fresh: removing the cluster in {layout.root} and its data")
            supervisor.stop(layout)
            _teardown(layout, existing)
            existing = None
        if existing is not None:
            _check_same_ports(spec, existing)
            if _healthy(layout, existing):
                _add_missing_nodes(layout, spec, existing)
                if spec.real_node and not existing.real_node:
                    _start_real_node(layout, spec, existing, progress)
                existing.save(layout)
                _ensure_supervisor(layout)
                return _info(layout, existing, already_running=True)
            return _repair(layout, spec, existing, progress)
        if process.records(layout) or layout.etcd_data.exists():
            # No state.json: the first `up` never completed, so there is no cluster and no data to keep.
            progress(f"cleaning up an unfinished cluster in {layout.root} (its first `up` was interrupted)")
            supervisor.stop(layout)
            _teardown(layout, None)
        try:
            return _fresh_up(layout, spec, progress)
        except UnavailableError as exc:
            # Ports picked at random can be taken by a parallel test session between our check and the
            # server's bind; one retry on new ports makes that race harmless.
            picked = not spec.apiserver_port and not spec.etcd_port
            if not picked or "address already in use" not in exc.message:
                raise
            progress("a picked port was taken meanwhile; retrying on new ports")
            return _fresh_up(layout, spec, progress)


def _check_same_ports(spec: ClusterSpec, state: ClusterState) -> None:
    for option, asked, key in (("--apiserver-port", spec.apiserver_port, "apiserver"),
                               ("--etcd-port", spec.etcd_port, "etcd")):
        if asked and asked != state.ports[key]:
            raise ConfigError(
                f"the cluster in {spec.state_dir} uses {option.removeprefix('--')} {state.ports[key]}, not {asked}",
                hint=f"leave out {option} to keep the cluster and its data, or add --fresh to recreate it "
                f"on port {asked} (its data is lost)",
            )


def _ensure_supervisor(layout: Layout) -> None:
    record = process.read_record(layout, supervisor.NAME)
    if record is None or not record.alive():
        supervisor.start(layout)


def _control_plane_argv(bins: Binaries, layout: Layout, ports: Ports, spec: ClusterSpec) -> dict[str, list[str]]:
    served = spec.workload_api
    return {
        "etcd": commands.etcd(bins, layout, ports),
        "kube-apiserver": commands.apiserver(bins, layout, ports, workload_api=served),
        "kube-controller-manager": commands.controller_manager(bins, layout, workload_api=served),
        "kube-scheduler": commands.scheduler(bins, layout, workload_api=served),
        "kwok": commands.kwok(bins, layout),
    }


_KEEP = "`kubeaccel cluster up --fresh` recreates the cluster (its data is lost)"


def _repair(layout: Layout, spec: ClusterSpec, state: ClusterState, progress: Progress) -> ClusterInfo:
    """Restart the dead parts of an existing cluster with its recorded ports, certificates and etcd data."""
    _check_repairable(layout, state)
    supervisor.stop(layout)
    ports = Ports(state.ports["etcd"], state.ports["etcd-peer"], state.ports["apiserver"])
    dead = [name for name in CONTROL_PLANE_COMPONENTS if not _alive(layout, name)]
    _check_ports_free(layout, ports, dead)
    if dead:
        progress(f"repairing the cluster in {layout.root}: restarting {', '.join(dead)} "
                 f"(same ports, certificates and data)")
    restart = _Restarter(layout, _control_plane_argv(locate((*CONTROL_PLANE, "etcd")), layout, ports, spec),
                           progress)
    try:
        restart()
        context = api.ssl_context(layout)
        api.wait_until("kube-apiserver to become ready", lambda: api.readyz(layout, ports.apiserver, context),
                       APISERVER_TIMEOUT, restart)
        _add_missing_nodes(layout, spec, state)
        api.wait_until("the controllers, the scheduler and the simulated nodes",
                       api.cluster_usable(api.client(layout.kubeconfig), state.nodes), USABLE_TIMEOUT, restart)
        repaired = [name for name in CONTROL_PLANE_COMPONENTS if name in restart.restarted]
        repaired += _repair_real_node(layout, spec, state, progress)
        state.save(layout)
    finally:
        # Even a failed repair leaves the cluster supervised: what it could start keeps running.
        supervisor.start(layout)
    return _info(layout, state, repaired=repaired)


def _check_repairable(layout: Layout, state: ClusterState) -> None:
    """Same Kubernetes version, and the CA, kubeconfig and etcd data still there."""
    if state.version != KUBE_VERSION:
        raise KubeaccelError(
            f"the cluster in {layout.root} runs Kubernetes v{state.version}, this kubeaccel v{KUBE_VERSION}",
            hint=f"{_KEEP}; or `kubeaccel cluster down` first",
        )
    missing = [p for p in (layout.cert("ca"), layout.key("ca"), layout.kubeconfig, layout.etcd_data) if not p.exists()]
    if missing:
        raise KubeaccelError(
            f"the cluster in {layout.root} cannot be repaired: {', '.join(map(str, missing))} missing",
            hint=_KEEP,
        )


def _check_ports_free(layout: Layout, ports: Ports, dead: list[str]) -> None:
    """The recorded ports of the components to restart must not be taken by someone else meanwhile."""
    listens = {"etcd": (ports.etcd_client, ports.etcd_peer), "kube-apiserver": (ports.apiserver,)}
    taken = [port for name in dead for port in listens.get(name, ()) if not free_soon(port)]
    if taken:
        raise UnavailableError(
            f"cannot restart {', '.join(dead)} of the cluster in {layout.root}: port(s) "
            f"{', '.join(map(str, taken))} on 127.0.0.1 are taken by another process",
            hint=f"stop what listens there (ss -ltnp 'sport = :{taken[0]}') and run `kubeaccel cluster up` "
            f"again (the data is kept), or {_KEEP}",
        )


class _Restarter:
    """Restarts every dead control-plane component; callable again while the cluster comes back.

    While the API server was gone the controller-manager and scheduler may lose their leases and exit
    (now or during the wait): the repair keeps restarting what dies, at most REPAIR_ATTEMPTS times each.
    """

    def __init__(self, layout: Layout, argv: dict[str, list[str]], progress: Progress) -> None:
        self.layout, self.argv, self.progress = layout, argv, progress
        self.restarted: dict[str, int] = {}

    def __call__(self) -> None:
        layout = self.layout
        for name in CONTROL_PLANE_COMPONENTS:
            record = process.read_record(layout, name)
            if record is not None and record.alive():
                continue
            if self.restarted.get(name, 0) >= REPAIR_ATTEMPTS:
                raise UnavailableError(
                    f"{name} keeps exiting during the repair; last lines of {layout.log(name)}:\n"
                    f"{process.log_tail(layout, name)}",
                    hint=f"fix the cause shown above, then `kubeaccel cluster up` again (the data is kept), or {_KEEP}",
                )
            if self.restarted.get(name):
                self.progress(f"{name} exited while the cluster came back; restarting it")
            process.start(layout, name, self.argv[name], restarts=record.restarts + 1 if record else 1)
            self.restarted[name] = self.restarted.get(name, 0) + 1


def _repair_real_node(layout: Layout, spec: ClusterSpec, state: ClusterState, progress: Progress) -> list[str]:
    """Restart a dead real node, or add one the spec now wants; returns what was restarted."""
    if state.real_node and not all(_alive(layout, n) for n in ("containerd", "kubelet")):
        progress("repairing the real node: restarting containerd and the kubelet")
        _stop_real_node_processes(layout)
        _start_real_node(layout, spec, state, progress)
        return ["containerd", "kubelet"]
    if spec.real_node and not state.real_node:
        _start_real_node(layout, spec, state, progress)
    return []


def _alive(layout: Layout, name: str) -> bool:
    record = process.read_record(layout, name)
    return record is not None and record.alive()


def _stop_real_node_processes(layout: Layout) -> None:
    from kubeaccel.cluster import realnode

    realnode.down(layout)


def _wait_apiserver(layout: Layout, ports: Ports) -> None:
    context = api.ssl_context(layout)
    api.wait_until(
        "kube-apiserver to become ready",
        lambda: api.readyz(layout, ports.apiserver, context),
        APISERVER_TIMEOUT,
        _fail_if_dead(layout, ("etcd", "kube-apiserver")),
    )


def _fresh_up(layout: Layout, spec: ClusterSpec, progress: Progress) -> ClusterInfo:
    if spec.real_node:
        from kubeaccel.cluster import realnode

        realnode.check_host()
        realnode.check_state_dir(layout)
        realnode.check_unclaimed(layout)
    ports = _ports(spec)
    bins = locate((*CONTROL_PLANE, "etcd"))
    hostname = socket.gethostname()
    remove_created(layout)
    progress(f"writing certificates and kubeconfigs to {layout.root}")
    write_control_plane_files(layout, ports, hostname)
    state = ClusterState(
        server=ports.server,
        ports={"apiserver": ports.apiserver, "etcd": ports.etcd_client, "etcd-peer": ports.etcd_peer},
        nodes=[],
        node_resources=dict(spec.node_resources),
        version=KUBE_VERSION,
    )
    try:
        argv = _control_plane_argv(bins, layout, ports, spec)
        progress(f"starting etcd and kube-apiserver v{KUBE_VERSION} on {ports.server}")
        process.start(layout, "etcd", argv["etcd"])
        process.start(layout, "kube-apiserver", argv["kube-apiserver"])
        _wait_apiserver(layout, ports)
        progress("starting kube-controller-manager, kube-scheduler and kwok")
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            process.start(layout, name, argv[name])
        state.save(layout)
        _add_missing_nodes(layout, spec, state)
        progress(f"waiting for {len(state.nodes)} simulated node(s) and the controllers")
        api.wait_until(
            "the controllers, the scheduler and the simulated nodes",
            api.cluster_usable(api.client(layout.kubeconfig), state.nodes),
            USABLE_TIMEOUT,
            _fail_if_dead(layout, CONTROL_PLANE_COMPONENTS),
        )
        if spec.real_node:
            _start_real_node(layout, spec, state, progress)
        state.save(layout)
        supervisor.start(layout)
    except BaseException:
        supervisor.stop(layout)
        _teardown(layout, state, keep_logs=True)
        raise
    return _info(layout, state)


def _add_missing_nodes(layout: Layout, spec: ClusterSpec, state: ClusterState) -> None:
    wanted = [n for n in spec.node_names() if n not in state.nodes]
    if not wanted:
        return
    manifests = [kwok.node_manifest(name, spec.node_resources) for name in wanted]
    api.ensure_nodes(api.client(layout.kubeconfig), manifests)
    state.nodes.extend(wanted)
    state.save(layout)


def _start_real_node(layout: Layout, spec: ClusterSpec, state: ClusterState, progress: Progress) -> None:
    from kubeaccel.cluster import realnode

    try:
        state.real_node = realnode.up(layout, state.server, progress)
    except BaseException:
        realnode.down(layout)
        raise
    state.save(layout)


def _teardown(layout: Layout, state: ClusterState | None, keep_logs: bool = False) -> list[str]:
    # Supervisors first, recorded or not (a PID file lost to a kill -9 of `up`): they would restart what is
    # being stopped. The recorded one by its record, so that only a truly unrecorded one is reported as such.
    supervisor.stop(layout)
    stopped = _stop_strays(layout, programs=())
    real_node = state is not None and state.real_node is not None
    if real_node or (layout.node.exists()):
        from kubeaccel.cluster import realnode

        stopped += realnode.down(layout)
    stopped += process.stop_all(layout)
    stopped += _stop_strays(layout)
    # Whatever is still mounted under the state dir (a pod volume of a node whose records were lost), deepest first.
    hostclean.unmount_all([layout.root])
    remove_created(layout, keep_logs=keep_logs)
    return stopped


def _stop_strays(layout: Layout, programs: tuple[str, ...] = PROGRAMS) -> list[str]:
    """Stop processes of this cluster that no PID file records any more (an ``up`` killed between starting a
    process and recording it, a PID file removed by hand): found by their command lines naming the state dir.
    ``programs=()``: only supervisors."""
    pids = hostclean.cluster_pids(layout.root, programs)
    names = []
    for pid in pids:
        with contextlib.suppress(OSError):
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in _wait_gone(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(pids)
    return [f"{name} (unrecorded)" for name in names]


def _wait_gone(pids: list[int]) -> list[int]:
    """Wait up to STRAY_GRACE for ``pids`` to exit; returns those still running."""
    deadline = time.monotonic() + STRAY_GRACE
    while pids and time.monotonic() < deadline:
        for pid in pids:
            process.reap(pid)
        pids = [pid for pid in pids if not _zombie(pid)]
        time.sleep(0.05)
    return pids


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def down(state_dir: Path) -> list[str]:
    """Stop every process of the cluster in ``state_dir`` and remove what ``up`` created, then check that
    nothing is left: a KubeaccelError (exit 1) names what could not be stopped or removed. Safe to repeat;
    after a crash (a kill -9 of ``up``, of the supervisor or of the demo) it finishes the job."""
    from kubeaccel.cluster import realnode

    layout = Layout(state_dir)
    if not layout.root.exists():
        return []
    with locked(layout, wait=DOWN_LOCK_WAIT):
        had_node = layout.node.exists() or realnode.claimed_by(layout)
        snapshot = realnode.host_snapshot(layout) if had_node else None
        stopped = _teardown(layout, ClusterState.load(layout, strict=False))
        on_host = realnode.leftovers(snapshot) if snapshot is not None else []
        left = leftovers(layout) + on_host
        if snapshot is not None and on_host:  # kept, so that the next `down` knows again what was there before
            realnode.keep_host_snapshot(layout, snapshot)
    layout.lock_file.unlink(missing_ok=True)
    # The user's own files remain in a --state-dir they chose, and so does that dir.
    with contextlib.suppress(OSError):
        layout.root.rmdir()
    if left:
        raise KubeaccelError(
            f"cluster down left {len(left)} thing(s) behind in or for {layout.root}: {'; '.join(left[:20])}",
            hint="run `kubeaccel cluster down` again; if they stay, stop or remove them by hand (as root)",
            exit_code=1,
        )
    return stopped


def leftovers(layout: Layout) -> list[str]:
    """What of the cluster in ``layout`` is still there after a teardown: its processes (by command line),
    mounts under the state dir, and files ``up`` created."""
    found = []
    for pid in hostclean.cluster_pids(layout.root, PROGRAMS):
        if not _zombie(pid):
            argv0 = ""
            with contextlib.suppress(OSError):
                argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            found.append(f"process {pid} ({os.path.basename(argv0)})")
    mountinfo = Path("/proc/self/mountinfo").read_text()
    found += [f"mount {m}" for m in hostclean.mounts_under(mountinfo, [layout.root])]
    found += [f"file {layout.root / n}" for n in CREATED if os.path.lexists(layout.root / n)]
    return found


def status(state_dir: Path) -> tuple[ClusterInfo, bool, list[tuple[str, bool, dict[str, str]]]]:
    """(cluster, API server ready, nodes with readiness and allocatable) or NotFoundError if none is there."""
    layout = Layout(state_dir)
    state = ClusterState.load(layout)
    if state is None:
        raise NotFoundError(f"no local cluster in {state_dir}", hint="start one with `kubeaccel cluster up`")
    info = _info(layout, state)
    ready = api.readyz(layout, state.ports["apiserver"])
    nodes: list[tuple[str, bool, dict[str, str]]] = []
    if ready:
        nodes = api.node_summary(api.client(layout.kubeconfig))
    return info, ready, nodes


def remove_real_node(state_dir: Path) -> list[str]:
    """Stop the real node (tier 2) of a running cluster, keeping the control plane and kwok nodes."""
    from kubeaccel.cluster import realnode

    layout = Layout(state_dir)
    with locked(layout):
        state = ClusterState.load(layout)
        stopped = realnode.down(layout)
        if state is not None and state.real_node:
            # The Node object would otherwise linger NotReady and confuse the scheduler's view of the cluster.
            api.delete_node(api.client(layout.kubeconfig), state.real_node)
            state.real_node = None
            state.save(layout)
        shutil.rmtree(layout.node, ignore_errors=True)
    return stopped
