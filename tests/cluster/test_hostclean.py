"""Finding what a kubelet leaves behind, from the text /proc and iptables-save print (no host changes)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from kubeaccel.cluster.hostclean import iptables_chains, is_cluster_process, mounts_under, new_chains, rules_jumping_to
from kubeaccel.cluster.lifecycle import PROGRAMS

MOUNTINFO = """\
22 1 254:0 / / rw - ext4 /dev/vda rw
90 22 254:0 /s/node/kubelet /s/node/kubelet rw shared:1 - ext4 /dev/vda rw
91 90 0:50 / /s/node/kubelet/pods/u1/volumes/kubernetes.io~projected/kube-api-access-x rw - tmpfs tmpfs rw
92 22 0:51 / /s/node/containerd/state/io.containerd.runtime.v2.task/k8s.io/abc/rootfs rw - overlay overlay rw
93 22 0:52 / /s/nodes\\040other rw - tmpfs tmpfs rw
94 22 0:53 / /other rw - tmpfs tmpfs rw
"""

BEFORE = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:DOCKER - [0:0]
COMMIT
"""

AFTER = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:DOCKER - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:SOMEONE-ELSE - [0:0]
COMMIT
*nat
:POSTROUTING ACCEPT [0:0]
:CNI-abc123 - [0:0]
COMMIT
"""


def test_mounts_under_root_deepest_first_with_escapes() -> None:
    found = mounts_under(MOUNTINFO, [Path("/s/node")])
    assert found[-1] == "/s/node/kubelet"
    assert found.index("/s/node/kubelet/pods/u1/volumes/kubernetes.io~projected/kube-api-access-x") < found.index(
        "/s/node/kubelet")
    assert "/other" not in found and "/s/nodes other" not in found
    assert mounts_under(MOUNTINFO, [Path("/s/nodes other")]) == ["/s/nodes other"]


def test_only_new_kube_and_cni_chains_are_ours() -> None:
    ours = new_chains(iptables_chains(BEFORE), iptables_chains(AFTER))
    assert ours == {"filter": {"KUBE-FIREWALL", "KUBE-KUBELET-CANARY"}, "nat": {"CNI-abc123"}}


def test_rules_jumping_to_new_chains_become_deletions() -> None:
    rules = "\n".join([
        "-P INPUT ACCEPT",
        "-A INPUT -j KUBE-FIREWALL",
        "-A POSTROUTING -s 10.244.0.5/32 -m comment --comment x -j CNI-abc123",
        "-A INPUT -j DOCKER",
        "-A KUBE-FIREWALL -j DROP",
    ])
    assert rules_jumping_to(rules, {"KUBE-FIREWALL", "CNI-abc123"}) == [
        ["-D", "INPUT", "-j", "KUBE-FIREWALL"],
        ["-D", "POSTROUTING", "-s", "10.244.0.5/32", "-m", "comment", "--comment", "x", "-j", "CNI-abc123"],
    ]


def test_a_quoted_comment_of_the_cni_bridge_plugin_stays_one_argument() -> None:
    # as `iptables -t nat -S` prints the rule the bridge plugin adds for each pod: split on spaces, the -D
    # matched no rule and the CNI-* chain stayed on the host after `down`
    line = (
        '-A POSTROUTING -s 10.244.0.2/32 -m comment --comment "name: \\"kubeaccel\\" id: \\"b58b4cd3\\"" '
        "-j CNI-a4b20c50c1036a18d21d6134"
    )
    assert rules_jumping_to(line, {"CNI-a4b20c50c1036a18d21d6134"}) == [
        ["-D", "POSTROUTING", "-s", "10.244.0.2/32", "-m", "comment", "--comment", 'name: "kubeaccel" id: "b58b4cd3"',
         "-j", "CNI-a4b20c50c1036a18d21d6134"],
    ]  # fmt: skip


# Which processes belong to a cluster, by command line (what `down` stops when no PID file records them).
_SEGMENT = st.text(alphabet="abcxyz-_.0123456789", min_size=1, max_size=8).filter(lambda s: s not in (".", ".."))


@given(rest=st.lists(_SEGMENT, max_size=3), flag=st.sampled_from(["", "--config=", "--data-dir="]),
       program=st.sampled_from(["etcd", "kube-apiserver", "kwok", "kubelet", "containerd"]))
def test_a_program_of_ours_naming_a_path_in_the_state_dir_is_the_clusters(
    rest: list[str], flag: str, program: str
) -> None:
    root = Path("/tmp/state")
    path = "/".join([str(root), *rest])
    assert is_cluster_process([f"/cache/bin/{program}", "-v", f"{flag}{path}"], root, PROGRAMS)
    # Not another state dir that merely starts with the same characters, nor another program.
    assert not is_cluster_process([f"/cache/bin/{program}", f"{flag}/tmp/state2/{'/'.join(rest)}"], root, PROGRAMS)
    assert not is_cluster_process(["/usr/bin/vim", f"{flag}{path}"], root, PROGRAMS)
    assert not is_cluster_process([f"/cache/bin/{program}"], root, PROGRAMS)


def test_the_supervisor_is_matched_by_its_module() -> None:
    root = Path("/tmp/state")
    assert is_cluster_process(["/venv/bin/python3", "-m", "kubeaccel.cluster.supervisor", "/tmp/state"], root, ())
    assert not is_cluster_process(["/venv/bin/python3", "-m", "kubeaccel.cluster.supervisor", "/tmp/other"], root, ())
    assert not is_cluster_process(["/venv/bin/python3", "/tmp/state/script.py"], root, ())
