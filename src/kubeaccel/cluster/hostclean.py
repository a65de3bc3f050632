"""What a kubelet and containerd leave on the host, found and removed: mounts, cgroups, iptables chains,
network namespaces, a bridge, stray processes. Each finder is a pure function of what /proc or a command
printed, so it is tested without touching the host; the removers are thin.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")
_MNT_DETACH = 2
_OURS = re.compile(r"^(KUBE|CNI)-")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_points(mountinfo: str) -> list[str]:
    return [_unescape(line.split()[4]) for line in mountinfo.splitlines() if len(line.split()) > 4]


def mounts_under(mountinfo: str, roots: Iterable[Path]) -> list[str]:
    """Mount points at or below any of ``roots``, deepest first (the order to unmount them)."""
    prefixes = [str(r).rstrip("/") for r in roots]
    found = {
        m for m in mount_points(mountinfo)
        if any(m == p or m.startswith(p + "/") for p in prefixes)
    }
    return sorted(found, key=lambda m: (-m.count("/"), m))


def unmount_all(roots: Iterable[Path]) -> list[str]:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    done = []
    # Unmounting can reveal mounts that were shadowed; repeat until nothing is left.
    for _ in range(5):
        targets = mounts_under(Path("/proc/self/mountinfo").read_text(), roots)
        if not targets:
            break
        for target in targets:
            if libc.umount2(target.encode(), _MNT_DETACH) == 0:
                done.append(target)
    return done


def iptables_chains(save_output: str) -> dict[str, set[str]]:
    """table -> chain names, from ``iptables-save``."""
    chains: dict[str, set[str]] = {}
    table = ""
    for line in save_output.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            chains.setdefault(table, set())
        elif line.startswith(":") and table:
            chains[table].add(line[1:].split()[0])
    return chains


def new_chains(before: dict[str, set[str]], after: dict[str, set[str]]) -> dict[str, set[str]]:
    """Chains the kubelet or CNI created since ``before`` (only KUBE-* and CNI-*: never someone else's)."""
    return {
        table: {c for c in chains - before.get(table, set()) if _OURS.match(c)}
        for table, chains in after.items()
        if chains - before.get(table, set())
    }


def rules_jumping_to(rules: str, chains: set[str]) -> list[list[str]]:
    """``-D`` argument lists for every rule (from ``iptables -S``) that jumps to one of ``chains``."""
    deletions = []
    for line in rules.splitlines():
        # iptables -S quotes what has spaces, as the CNI plugins' comments do (`--comment "name: \"x\" id: ..."`):
        # split as a shell would, or the -D names no existing rule and the chain can never be deleted
        try:
            parts = shlex.split(line)
        except ValueError:
            continue
        if len(parts) > 2 and parts[0] == "-A" and parts[1] not in chains:
            for flag in ("-j", "-g"):
                if flag in parts and parts[parts.index(flag) + 1] in chains:
                    deletions.append(["-D", *parts[1:]])
                    break
    return deletions


def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    return proc.stdout if proc.returncode == 0 else ""


def snapshot_iptables() -> dict[str, dict[str, list[str]]]:
    result = {}
    for tool in ("iptables", "ip6tables"):
        save = shutil.which(f"{tool}-save") or shutil.which(f"{tool}-save", path="/usr/sbin:/sbin")
        if save:
            result[tool] = {t: sorted(c) for t, c in iptables_chains(_run([save])).items()}
    return result


def remove_new_chains(before: dict[str, dict[str, list[str]]]) -> list[str]:
    removed = []
    for tool, tables in snapshot_iptables().items():
        binary = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin") or tool
        previous = {t: set(c) for t, c in before.get(tool, {}).items()}
        for table, chains in new_chains(previous, {t: set(c) for t, c in tables.items()}).items():
            for deletion in rules_jumping_to(_run([binary, "-t", table, "-S"]), chains):
                _run([binary, "-t", table, *deletion])
            for chain in chains:
                _run([binary, "-t", table, "-F", chain])
            for chain in chains:
                _run([binary, "-t", table, "-X", chain])
                removed.append(f"{tool}/{table}/{chain}")
    return removed


def netns_names() -> list[str]:
    return sorted(p.name for p in NETNS_DIR.iterdir()) if NETNS_DIR.is_dir() else []


def remove_netns(names: Iterable[str]) -> None:
    for name in names:
        path = NETNS_DIR / name
        unmount_all([path])
        path.unlink(missing_ok=True)


def cgroup_dirs(name: str) -> list[Path]:
    """``name`` (e.g. ``kubeaccel``) in every mounted cgroup hierarchy (v1 controllers and v2)."""
    if not CGROUP_ROOT.is_dir():
        return []
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # pure cgroup v2
        return [CGROUP_ROOT / name]
    return [h / name for h in sorted(CGROUP_ROOT.iterdir()) if h.is_dir() and not h.is_symlink()]


def pids_in_cgroups(roots: Iterable[Path]) -> set[int]:
    pids: set[int] = set()
    for root in roots:
        if not root.is_dir():
            continue
        for parent, _, files in os.walk(root):  # tolerates cgroups removed meanwhile, as remove_cgroups does
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(p) for p in Path(parent, "cgroup.procs").read_text().split())
    return pids


def remove_cgroups(roots: Iterable[Path]) -> None:
    """Kill what still runs inside, then remove the directories bottom-up (rmdir is how cgroups are deleted)."""
    roots = [r for r in roots if r.is_dir()]
    for _ in range(50):
        pids = pids_in_cgroups(roots)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for root in roots:
            # os.walk, bottom-up, ignores a directory removed while it walks (the kubelet and containerd remove
            # pod cgroups at the same time); pathlib's rglob raised FileNotFoundError out of `down` there
            for parent, dirs, _ in os.walk(root, topdown=False):
                for name in dirs:
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.join(parent, name))
            with contextlib.suppress(OSError):
                root.rmdir()
        if not any(r.exists() for r in roots):
            return
        time.sleep(0.1)


def pids_with_argument(argument: str, program_fragment: str) -> list[int]:
    """PIDs whose command line names ``program_fragment`` and contains ``argument`` (e.g. our containerd socket)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and program_fragment.encode() in argv[0] and argument.encode() in argv:
            found.append(int(entry.name))
    return found


def names_path_under(argv: list[str], root: Path) -> bool:
    """Whether an argument is ``root`` or a path below it, alone or as ``--flag=PATH``."""
    prefix = str(root).rstrip("/")
    for arg in argv:
        value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
        if value == prefix or value.startswith(prefix + "/"):
            return True
    return False


def is_cluster_process(argv: list[str], root: Path, programs: Iterable[str]) -> bool:
    """One of our ``programs`` (by file name) or our supervisor, working on the cluster in ``root``."""
    if not argv:
        return False
    ours = os.path.basename(argv[0]) in set(programs) or argv[1:3] == ["-m", "kubeaccel.cluster.supervisor"]
    return ours and names_path_under(argv[1:], root)


def cluster_pids(root: Path, programs: Iterable[str]) -> list[int]:
    """Processes of the cluster in ``root`` by their command lines, whether or not a PID file still records them."""
    wanted = tuple(programs)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0")[:-1]]
        except OSError:
            continue
        if is_cluster_process(argv, root, wanted):
            found.append(int(entry.name))
    return found


def link_names() -> list[str]:
    net = Path("/sys/class/net")
    return sorted(p.name for p in net.iterdir()) if net.is_dir() else []


def delete_link(name: str) -> bool:
    if not Path("/sys/class/net", name).exists():
        return False
    ip = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin") or "ip"
    return subprocess.run([ip, "link", "delete", name], capture_output=True, check=False, timeout=30).returncode == 0
