"""Inventory files: the spec's example loads; malformed ones give one line naming file, line and key."""

from __future__ import annotations

import textwrap

import pytest

from commpath.classify import load_inventory
from commpath.cli import main as cli_main
from commpath.errors import InputError

SPEC_EXAMPLE = """\
apiVersion: commpath/v1
kind: Inventory
cluster: lab
apiserver:
  endpoints: ["192.0.2.10:6443"]   # where the apiserver listens
  service: "10.96.0.1:443"         # the `kubernetes` service VIP in namespace default
control_plane:
  - name: cp1
    addresses: ["192.0.2.10"]
nodes:
  - name: node1
    addresses: ["192.0.2.21"]
    pod_cidrs: ["10.244.1.0/24"]
kubelet_port: 10250
kubelet_readonly_port: 10255
pod_cidrs: ["10.244.0.0/16"]
service_cidrs: ["10.96.0.0/12"]
konnectivity:
  enabled: false
  server: "192.0.2.10:8132"
etcd: ["192.0.2.10:2379"]
ca_bundle: pki/ca.crt               # the cluster root CA(s), PEM; relative to this file
"""


def _write(tmp_path, text, name="inventory.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_spec_example_loads(tmp_path):
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    inv = load_inventory(_write(tmp_path, SPEC_EXAMPLE))
    assert inv.cluster == "lab"
    assert inv.apiserver_endpoints == [("192.0.2.10", 6443)]
    assert inv.service == ("10.96.0.1", 443)
    assert inv.control_plane[0].name == "cp1" and inv.node_addresses == {"192.0.2.21"}
    assert inv.nodes[0].pod_cidrs == ["10.244.1.0/24"]
    assert inv.etcd == [("192.0.2.10", 2379)]
    assert inv.konnectivity_server == ("192.0.2.10", 8132) and not inv.konnectivity_enabled
    assert inv.ca_bundle == (tmp_path / "pki" / "ca.crt").resolve()
    # round trip through the spec's YAML
    again = _write(tmp_path, __import__("yaml").safe_dump(inv.to_dict()), "again.yaml")
    assert load_inventory(again).to_dict() == inv.to_dict()


def test_ipv6_and_dual_stack_addresses_are_normalised(tmp_path):
    inv = load_inventory(_write(tmp_path, """\
        apiserver:
          endpoints: ["[2001:DB8:0::10]:6443", "192.0.2.10:6443"]
        nodes:
          - name: n1
            addresses: ["2001:db8:0:0::21", "192.0.2.21"]
            pod_cidrs: ["fd00:10:244:1::/64", "10.244.1.0/24"]
        """))
    assert inv.apiserver_endpoints == [("2001:db8::10", 6443), ("192.0.2.10", 6443)]
    assert inv.nodes[0].addresses == ["2001:db8::21", "192.0.2.21"]
    assert load_inventory(_write(tmp_path, "{}\n", "empty.yaml")).nodes == []


MALFORMED = [
    ("unknown key", "apiVersion: commpath/v1\nnodez: []\n", 2, "nodez", "unknown key"),
    ("bad endpoint", "apiserver:\n  endpoints:\n    - 192.0.2.10\n", 3, "apiserver.endpoints[0]", "not an endpoint"),
    ("bad address", "nodes:\n  - name: n1\n    addresses: [192.0.2.300]\n", 3, "nodes[0].addresses[0]", "not an IP address"),
    ("bad cidr", "pod_cidrs:\n  - 10.244.0.0/33\n", 2, "pod_cidrs[0]", "not a CIDR"),
    ("port range", "kubelet_port: 70000\n", 1, "kubelet_port", "integer in 1..65535"),
    ("missing name", "control_plane:\n  - addresses: [192.0.2.10]\n", 2, "control_plane[0]", "missing key 'name'"),
    ("wrong type", "nodes: node1\n", 1, "nodes", "expected a list"),
    ("bool", "konnectivity:\n  enabled: maybe\n", 2, "konnectivity.enabled", "expected true or false"),
    ("enabled without server", "konnectivity:\n  enabled: true\n", 1, "konnectivity", "needs a 'server'"),
    ("kind", "kind: Policy\n", 1, "kind", "expected 'Inventory'"),
    ("ca missing", "ca_bundle: nope/ca.crt\n", 1, "ca_bundle", "no such file"),
    ("syntax", "nodes: [\n  - a\n", 2, None, "invalid YAML"),
    ("duplicate", "cluster: a\ncluster: b\n", 2, "cluster", "duplicate key"),
]


@pytest.mark.parametrize("text,line,key,reason", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_inventory_names_file_line_and_key(tmp_path, text, line, key, reason):
    path = _write(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_inventory(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    if key:
        assert f": {key}: " in msg, msg
    assert reason in msg and "\n" not in msg


def test_malformed_inventory_on_the_command_line_exits_2_with_one_line(tmp_path, capsys):
    bad = _write(tmp_path, "nodes:\n  - name: n1\n    addresses: [not-an-ip]\n")
    rc = cli_main(["analyze", "/nonexistent.pcap", "--inventory", str(bad), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err == [f"commpath: error: {bad}:3: nodes[0].addresses[0]: 'not-an-ip' is not an IP address"]


def test_missing_inventory_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_inventory(tmp_path / "absent.yaml")
