"""A version's page shows its last privacy audit in the Privacy table beside its ε, every value escaped; the
REST API answers it with the version."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from lepton_ai.privacy.audit import audit
from lepton_ai.privacy.membership import AttackFigures, AuditResult, Interval
from lepton_ai.store import Registry
from lepton_ai.store.reports import VersionReports
from lepton_ai.train.job import train_and_register
from tests.control.conftest import artifact

XSS = "<img src=x onerror=alert(1)>"


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_a_real_audit_is_shown_on_the_version_page(api: TestClient) -> None:
    train_and_register("mlp", "digits", "dg", epochs=3, device="cpu", progress=False)
    result = audit("dg", "digits", shadow_models=2, examples=40, progress=False)
    page = api.get("/models/dg/1").text
    privacy = _text(page[page.index('id="privacy"') : page.index("<h2>Cost")])
    lira, loss = result.lira, result.loss
    assert f"LiRA (online, 2 shadow models) AUC {lira.auc:.3f} [{lira.auc_ci.low:.3f}, " in privacy
    assert f"TPR at 1 % FPR {100 * lira.tpr:.1f} %" in privacy
    assert f"loss threshold AUC {loss.auc:.3f}" in privacy
    assert "40 members of digits against 40 held-out examples, 95 % intervals" in privacy
    answer = api.get("/api/v1/models/dg/versions/1").json()
    assert answer["privacy_audit"]["lira"] == lira.to_dict()


def test_the_audit_sits_beside_epsilon_escaped(api: TestClient, registry: Registry, tmp_path: Path) -> None:
    privacy = {"epsilon": 2.97, "delta": 1e-5, "mechanism": "DP-SGD"}
    registry.register("private", artifact(tmp_path, "v1"), recipe={"privacy": privacy})
    figures = AttackFigures(0.512, Interval(0.47, 0.55), 0.013, Interval(0.0, 0.03))
    result = AuditResult(
        ref="private:1",
        data=XSS,
        members=300,
        non_members=300,
        shadow_models=4,
        variant=XSS,
        loss=figures,
        lira=figures,
        member_accuracy=0.9,
        non_member_accuracy=0.89,
        epsilon=2.97,
    )
    VersionReports().add("private:1", "privacy_audit", result.to_dict())
    page = api.get("/models/private/1").text
    assert XSS not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    privacy_table = _text(
        page[page.index('id="privacy"') : page.index("</table>", page.index('id="privacy"'))]
    )
    assert "ε 2.97" in privacy_table and "AUC 0.512 [0.470, 0.550]" in privacy_table
    assert "TPR at 1 % FPR 1.3 % [0.0, 3.0]" in privacy_table
    # a version never audited shows its ε alone
    registry.register("private", artifact(tmp_path, "v2"), recipe={"privacy": privacy})
    assert 'id="audit-lira"' not in api.get("/models/private/2").text
