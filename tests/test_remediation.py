"""Per-path remediation: a finding names only the flags that fix its own path, in every format."""

from __future__ import annotations

import re

import pytest

from commpath.check import load_checks
from commpath.check.policy import checks_from_doc
from commpath.classify._yamldoc import load_yaml
from commpath.errors import InputError
from commpath.present import html
from test_present_data import lab_analysis, lab_scenarios

ETCD_FLAGS = re.compile(r"--etcd-|--client-cert-auth|--peer-|--trusted-ca-file")


def test_every_path_of_a_split_remediation_is_a_path_of_its_check():
    for check in load_checks().values():
        assert set(check.remediation_by_path) <= set(check.paths), check.id
        for path in check.paths:
            assert check.remediation_for(path)


def test_a_remediation_for_a_path_the_check_does_not_judge_is_an_error(tmp_path):
    bad = tmp_path / "checks.yaml"
    bad.write_text("""apiVersion: commpath/v1
kind: Checks
checks:
  - id: kubelet-readonly-port
    title: t
    severity: medium
    paths: [kubelet-readonly]
    test: any-flow
    reference: {anchor: api-server-to-kubelet}
    remediation: r
    remediation_by_path:
      etcd: set something
""")
    with pytest.raises(InputError) as exc:
        checks_from_doc(load_yaml(bad))
    assert "remediation_by_path.etcd" in str(exc.value) and "not a path of this check" in str(exc.value)


def test_client_cert_remediation_is_split_by_path():
    check = load_checks()["client-cert-missing"]
    assert ETCD_FLAGS.search(check.remediation)                      # the general text covers all paths
    assert not ETCD_FLAGS.search(check.remediation_for("node-to-apiserver"))
    assert not ETCD_FLAGS.search(check.remediation_for("apiserver-to-kubelet"))
    assert "--kubelet-client-certificate" in check.remediation_for("apiserver-to-kubelet")
    assert "--client-cert-auth" in check.remediation_for("etcd")


@pytest.mark.skipif("broken" not in lab_scenarios(), reason="bundled lab captures missing")
def test_findings_and_the_html_fix_list_name_only_their_paths_flags():
    analysis = lab_analysis("broken")
    checks = load_checks()
    assert len(analysis.findings)
    for _, f in analysis.findings.iterrows():
        assert f["remediation"] == checks[str(f["check"])].remediation_for(str(f["path"]))
    page = html.build_html(analysis)
    section = re.search(r'<section class="path" id="path-node-to-apiserver".*?</section>', page, re.S).group(0)
    fixes = re.search(r"<h3>How to fix this path</h3><ul class=\"fix\">(.*?)</ul>", section, re.S).group(1)
    assert "client-cert-missing" in fixes and not ETCD_FLAGS.search(fixes)
