"""Finding what a kubelet leaves behind, from the text /proc and iptables-save print (no host changes)."""

from __future__ import annotations

from pathlib import Path

from kubeaccel.cluster.hostclean import iptables_chains, mounts_under, new_chains, rules_jumping_to

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
