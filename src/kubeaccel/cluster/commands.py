"""Command lines of the control-plane processes: pure functions of the layout, ports and binaries."""

from __future__ import annotations

from dataclasses import dataclass

from kubeaccel.cluster.binaries import Binaries
from kubeaccel.cluster.kwok import MANAGED_ANNOTATION, MANAGED_VALUE
from kubeaccel.cluster.layout import Layout

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# The apiserver's client identity towards kubelets (logs, exec): bound to system:masters.
APISERVER_KUBELET_CLIENT = "kube-apiserver-kubelet-client"
# The one place the local cluster's API groups and feature gates are switched on (beyond the release defaults).
# Gang scheduling in the core (Kubernetes 1.37): the GenericWorkload gate (beta, off by default) serves
# scheduling.k8s.io Workload/PodGroup, admits pod.spec.schedulingGroup and adds the scheduler's GangScheduling
# plugin; the v1beta1 group is a beta API, so it is off until runtime-config serves it. The gate goes to every
# component that reads it (apiserver, controller-manager, scheduler) so they agree.
FEATURE_GATES: dict[str, bool] = {"GenericWorkload": True}
RUNTIME_CONFIG: tuple[str, ...] = ("scheduling.k8s.io/v1beta1=true",)
# What ClusterSpec(workload_api=False) turns off (a cluster without the Workload API, for tests of the refusal).
_WITHOUT_WORKLOAD_API_GATES: dict[str, bool] = {"GenericWorkload": False}
_WITHOUT_WORKLOAD_API_CONFIG: tuple[str, ...] = ("scheduling.k8s.io/v1beta1=false",)


def feature_gates_flag(workload_api: bool = True) -> str:
    gates = FEATURE_GATES if workload_api else {**FEATURE_GATES, **_WITHOUT_WORKLOAD_API_GATES}
    return "--feature-gates=" + ",".join(f"{k}={str(v).lower()}" for k, v in sorted(gates.items()))


def runtime_config_flag(workload_api: bool = True) -> str:
    config = RUNTIME_CONFIG if workload_api else _WITHOUT_WORKLOAD_API_CONFIG
    return "--runtime-config=" + ",".join(config)


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver}"


def etcd(bins: Binaries, layout: Layout, ports: Ports) -> list[str]:
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    client = f"http://127.0.0.1:{ports.etcd_client}"
    return [
        bins["etcd"],
        "--name=default",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        "--initial-cluster-state=new",
        # A throw-away cluster: compacting often keeps memory flat, no snapshots needed.
        "--auto-compaction-retention=1",
        "--snapshot-count=100000",
        "--log-level=warn",
    ]


def apiserver(bins: Binaries, layout: Layout, ports: Ports, *, workload_api: bool = True) -> list[str]:
    return [
        bins["kube-apiserver"],
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={ports.apiserver}",
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        f"--tls-cert-file={layout.cert('apiserver')}",
        f"--tls-private-key-file={layout.key('apiserver')}",
        f"--client-ca-file={layout.cert('ca')}",
        f"--kubelet-client-certificate={layout.cert(APISERVER_KUBELET_CLIENT)}",
        f"--kubelet-client-key={layout.key(APISERVER_KUBELET_CLIENT)}",
        # The kubelet refuses a loopback node IP; the real node's hostname resolves to 127.0.0.1 instead.
        "--kubelet-preferred-address-types=Hostname,InternalIP,ExternalIP",
        f"--service-account-key-file={layout.cert('service-account')}",
        f"--service-account-signing-key-file={layout.key('service-account')}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction,ResourceQuota",
        feature_gates_flag(workload_api),
        runtime_config_flag(workload_api),
        "--allow-privileged=true",
        # The endpoints of the `kubernetes` Service may not be a loopback address; nothing in-cluster needs them.
        "--endpoint-reconciler-type=none",
        "--profiling=false",
        "--v=1",
    ]


def _controller_common(bins: Binaries, layout: Layout, component: str, workload_api: bool) -> list[str]:
    kubeconfig = layout.component_kubeconfig(component)
    return [
        bins[component],
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        # No HTTPS endpoint: several clusters share this machine and nothing scrapes it.
        "--secure-port=0",
        "--leader-elect=true",
        feature_gates_flag(workload_api),
        "--profiling=false",
        "--v=1",
    ]


def controller_manager(bins: Binaries, layout: Layout, *, workload_api: bool = True) -> list[str]:
    return [
        *_controller_common(bins, layout, "kube-controller-manager", workload_api),
        f"--service-account-private-key-file={layout.key('service-account')}",
        f"--root-ca-file={layout.cert('ca')}",
        f"--cluster-signing-cert-file={layout.cert('ca')}",
        f"--cluster-signing-key-file={layout.key('ca')}",
        # One identity (system:masters, see state.CLIENTS) for all controllers instead of a ServiceAccount
        # token per controller: the default ServiceAccount exists ~4 s sooner, halving `up`. RBAC still
        # applies to every user and workload; only the controllers' own permissions go unchecked.
        "--use-service-account-credentials=false",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
    ]


def scheduler(bins: Binaries, layout: Layout, *, workload_api: bool = True) -> list[str]:
    return _controller_common(bins, layout, "kube-scheduler", workload_api)


def kwok(bins: Binaries, layout: Layout) -> list[str]:
    return [
        bins["kwok"],
        f"--kubeconfig={layout.component_kubeconfig('kwok')}",
        f"--config={layout.kwok_config}",
        f"--manage-nodes-with-annotation-selector={MANAGED_ANNOTATION}={MANAGED_VALUE}",
        "--node-lease-duration-seconds=40",
    ]
