"""`commpath inventory discover`: an inventory from a live cluster through the official `kubernetes` client."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import yaml

from ..errors import CommpathError, InputError
from .catalog import default_ports
from .inventory import Host, Inventory, normalize_ip

CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
KONNECTIVITY_PORT = default_ports()["konnectivity_port"]
ETCD_CLIENT_PORT = default_ports()["etcd_client_port"]
REQUEST_TIMEOUT = 15


def _client_modules():
    try:
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException
        from kubernetes.config.config_exception import ConfigException
    except ImportError:
        raise CommpathError("`inventory discover` needs the kubernetes client: "
                            "pip install 'commpath[discover]' (or pip install kubernetes)") from None
    return client, config, ApiException, ConfigException


def _flags(container) -> dict[str, str]:
    """``--name=value`` arguments of a container's command and args."""
    out: dict[str, str] = {}
    for arg in list(container.command or []) + list(container.args or []):
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            out[name] = value
    return out


def _pod_flags(pod) -> dict[str, str]:
    flags: dict[str, str] = {}
    for c in pod.spec.containers or []:
        flags.update(_flags(c))
    return flags


def _field(obj, *names):
    """The first attribute present: the client's models spell some fields differently across
    versions (``pod_cid_rs`` / ``pod_cidrs``, ``cluster_i_ps`` / ``cluster_ips``)."""
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _pod_kind(pod) -> str:
    labels = pod.metadata.labels or {}
    for key in ("component", "k8s-app", "app", "app.kubernetes.io/name"):
        if key in labels:
            return labels[key]
    return pod.metadata.name or ""


def _url_endpoint(url: str, default_port: int) -> tuple[str, int] | None:
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(url.strip())
        return normalize_ip(parts.hostname or ""), parts.port or default_port
    except ValueError:
        return None


def _endpoints_addresses(endpoints) -> list[tuple[str, int]]:
    out = []
    for subset in endpoints.subsets or []:
        ports = [p.port for p in (subset.ports or []) if p.name in (None, "https")] or [p.port for p in subset.ports or []]
        for a in subset.addresses or []:
            for port in ports:
                if (normalize_ip(a.ip), int(port)) not in out:
                    out.append((normalize_ip(a.ip), int(port)))
    return out


def _slice_addresses(slices) -> list[tuple[str, int]]:
    out = []
    for sl in slices.items or []:
        ports = [p.port for p in (sl.ports or []) if p.name in (None, "https")] or [p.port for p in sl.ports or []]
        for ep in sl.endpoints or []:
            if ep.conditions is not None and ep.conditions.ready is False:
                continue
            for addr in ep.addresses or []:
                for port in ports:
                    if (normalize_ip(addr), int(port)) not in out:
                        out.append((normalize_ip(addr), int(port)))
    return out


def implied_service_cidr(vip: str) -> str:
    """The service CIDR a ``kubernetes`` VIP implies: it is the CIDR's first address, so the network
    is VIP-1, with the widest prefix it is aligned to (no wider than Kubernetes allows: /12, /108)."""
    addr = ipaddress.ip_address(vip)
    network = int(addr) - 1
    bits = addr.max_prefixlen
    widest = 12 if addr.version == 4 else 108
    for prefix in range(widest, bits + 1):
        if network % (1 << (bits - prefix)) == 0:
            return str(ipaddress.ip_network((network, prefix)))
    return str(ipaddress.ip_network((network, bits)))


def discover(kubeconfig: str | None = None, context: str | None = None) -> Inventory:
    """Nodes, their InternalIPs and podCIDRs; the apiserver endpoints and service VIP (with the
    service CIDR); Konnectivity server and agents and etcd endpoints from kube-system."""
    client, config, ApiException, ConfigException = _client_modules()
    nodes, api_eps, service, pods = _fetch(client, config, ApiException, ConfigException, kubeconfig, context)
    inv = Inventory(file=None)
    inv.cluster = _cluster_name(config, kubeconfig, context)
    _add_nodes(inv, nodes)
    inv.apiserver_endpoints = api_eps
    vips = list(_field(service.spec, "cluster_ips", "cluster_i_ps") or ([service.spec.cluster_ip] if service.spec.cluster_ip else []))
    svc_port = next((p.port for p in service.spec.ports or [] if p.name in (None, "https")), 443)
    if vips:
        inv.service = (normalize_ip(vips[0]), int(svc_port))
    agents = _add_kube_system(inv, pods)
    if agents and inv.konnectivity_server:
        inv.konnectivity_enabled = True
    if inv.konnectivity_enabled and inv.konnectivity_server is None:
        inv.konnectivity_enabled = False  # the inventory needs the server endpoint to say enabled
    if not inv.service_cidrs and inv.service:
        inv.service_cidrs = [implied_service_cidr(inv.service[0])]
    if not inv.pod_cidrs:
        inv.pod_cidrs = []
    return inv


def _fetch(client, config, ApiException, ConfigException, kubeconfig, context):  # noqa: N803 - classes
    """(nodes, apiserver endpoints, the kubernetes service, kube-system pods) from the API server."""
    source = kubeconfig or "~/.kube/config"
    try:
        api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
    except (ConfigException, OSError, TypeError, ValueError) as exc:
        raise InputError(source, f"cannot load kubeconfig: {exc}") from None
    v1 = client.CoreV1Api(api_client)
    try:
        nodes = v1.list_node(_request_timeout=REQUEST_TIMEOUT).items
        try:
            endpoints = v1.read_namespaced_endpoints("kubernetes", "default", _request_timeout=REQUEST_TIMEOUT)
            api_eps = _endpoints_addresses(endpoints)
        except ApiException as exc:
            if exc.status not in (403, 404):
                raise
            # Endpoints is deprecated (v1.33): the EndpointSlices of the kubernetes service say the same
            slices = client.DiscoveryV1Api(api_client).list_namespaced_endpoint_slice(
                "default", label_selector="kubernetes.io/service-name=kubernetes", _request_timeout=REQUEST_TIMEOUT)
            api_eps = _slice_addresses(slices)
        service = v1.read_namespaced_service("kubernetes", "default", _request_timeout=REQUEST_TIMEOUT)
        try:
            pods = v1.list_namespaced_pod("kube-system", _request_timeout=REQUEST_TIMEOUT).items
        except ApiException as exc:
            if exc.status not in (403, 404):
                raise
            pods = []   # not allowed to list kube-system: konnectivity/etcd stay unknown
    except ApiException as exc:
        raise InputError(source, f"the API server answered {exc.status} {exc.reason}".strip()) from None
    except Exception as exc:  # urllib3 connection, TLS and timeout errors
        raise InputError(source, f"cannot reach the API server: {type(exc).__name__}: {exc}") from None
    finally:
        try:
            api_client.close()
        except Exception:
            pass
    return nodes, api_eps, service, pods


def _cluster_name(config, kubeconfig, context) -> str | None:
    """The kubeconfig context's cluster name (or the context's own name)."""
    try:
        ctx = config.list_kube_config_contexts(config_file=kubeconfig)[1]
    except Exception:
        return None
    name = (context or (ctx or {}).get("name")) or None
    if ctx and ctx.get("context", {}).get("cluster"):
        name = ctx["context"]["cluster"]
    return name


def _add_nodes(inv: Inventory, nodes) -> None:
    """Control-plane and worker hosts with their InternalIPs and podCIDRs; the kubelet port when all agree."""
    kubelet_ports = set()
    for node in nodes:
        labels = node.metadata.labels or {}
        addrs = [normalize_ip(a.address) for a in (node.status.addresses or []) if a.type == "InternalIP"]
        cidrs = list(_field(node.spec, "pod_cidrs", "pod_cid_rs") or ([node.spec.pod_cidr] if node.spec.pod_cidr else []))
        host = Host(name=node.metadata.name, addresses=addrs, pod_cidrs=cidrs)
        (inv.control_plane if any(k in labels for k in CONTROL_PLANE_LABELS) else inv.nodes).append(host)
        de = node.status.daemon_endpoints
        if de and de.kubelet_endpoint and de.kubelet_endpoint.port:
            kubelet_ports.add(int(de.kubelet_endpoint.port))
    if len(kubelet_ports) == 1:
        inv.kubelet_port = kubelet_ports.pop()


def _add_kube_system(inv: Inventory, pods) -> int:
    """Service and pod CIDRs, etcd and Konnectivity from the kube-system pods' flags; the number of agents."""
    agents = 0
    for pod in pods:
        kind, flags = _pod_kind(pod), _pod_flags(pod)
        host_ip = pod.status.host_ip if pod.status else None
        if kind == "kube-apiserver":
            if flags.get("service-cluster-ip-range"):
                inv.service_cidrs = [c.strip() for c in flags["service-cluster-ip-range"].split(",") if c.strip()]
            _add_etcd(inv, flags.get("etcd-servers", ""))
            if flags.get("egress-selector-config-file"):
                inv.konnectivity_enabled = True
        elif kind == "kube-controller-manager" and flags.get("cluster-cidr"):
            inv.pod_cidrs = [c.strip() for c in flags["cluster-cidr"].split(",") if c.strip()]
        elif kind == "etcd":
            _add_etcd(inv, flags.get("advertise-client-urls", ""))
        elif kind.startswith("konnectivity-server") and host_ip:
            port = int(flags.get("agent-port", KONNECTIVITY_PORT))
            inv.konnectivity_server = (normalize_ip(host_ip), port)
            inv.konnectivity_enabled = True
        elif kind.startswith("konnectivity-agent"):
            agents += 1
            if pod.spec.node_name and pod.spec.node_name not in inv.konnectivity_agents:
                inv.konnectivity_agents.append(pod.spec.node_name)
            if inv.konnectivity_server is None and flags.get("proxy-server-host"):
                try:
                    inv.konnectivity_server = (normalize_ip(flags["proxy-server-host"]),
                                               int(flags.get("proxy-server-port", KONNECTIVITY_PORT)))
                except ValueError:
                    pass
    return agents


def _add_etcd(inv: Inventory, urls: str) -> None:
    for url in filter(None, urls.split(",")):
        ep = _url_endpoint(url, ETCD_CLIENT_PORT)
        if ep and ep not in inv.etcd:
            inv.etcd.append(ep)


def main(args) -> int:
    """`commpath inventory discover [--kubeconfig FILE] [--context NAME] [-o FILE]`."""
    inv = discover(getattr(args, "kubeconfig", None), getattr(args, "context", None))
    text = "# written by `commpath inventory discover`\n" + yaml.safe_dump(inv.to_dict(), sort_keys=False)
    out = getattr(args, "output", "-") or "-"
    if out == "-":
        sys.stdout.write(text)
    else:
        try:
            Path(out).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(out, f"cannot write: {exc.strerror or exc}") from None
        print(f"inventory: {out} ({len(inv.control_plane)} control-plane, {len(inv.nodes)} nodes)", file=sys.stderr)
    return 0
