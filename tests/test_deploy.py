"""deploy/: the Prometheus alert rules and the Grafana dashboard name real metrics.

``promtool check rules`` runs when it is installed (Debian's ``prometheus`` package);
otherwise a structure check of the rule file stands in for it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from secstream.telemetry import Telemetry

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "secstream-dashboard.json"
_METRIC = re.compile(r"\b(secstream_[a-z_]+)")
_DURATION = re.compile(r"^\d+[smhdwy]$")


def exported_names() -> set[str]:
    """Every sample name /metrics shows (histogram series included)."""
    t = Telemetry(connections_active=lambda: 0, messages_delivered=lambda: 0, exporter=None)
    try:
        text = t.render()[0].decode()
    finally:
        t.shutdown()
    return set(re.findall(r"^(secstream_[a-z_]+)", text, re.MULTILINE))


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_rules_when_installed() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed; test_rules_are_well_formed checks the file")
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_are_well_formed() -> None:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    names: set[str] = set()
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"} and group["name"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations",
                                 "keep_firing_for"}, rule
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"]), rule["alert"]
            assert rule["alert"] not in names
            names.add(rule["alert"])
            expr = rule["expr"]
            assert isinstance(expr, str) and expr.strip()
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
            assert "for" not in rule or _DURATION.match(rule["for"]), rule
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert rule["annotations"]["summary"]
            for text in rule["annotations"].values():
                assert text.count("{{") == text.count("}}")


def test_rules_and_dashboard_use_metrics_that_exist() -> None:
    exported = exported_names()
    expressions = [rule["expr"] for rule in rules()]
    dashboard = json.loads(DASHBOARD.read_text())
    expressions += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for expr in expressions for name in _METRIC.findall(expr)}
    assert used, "no secstream metric used"
    assert used <= exported, used - exported
    for required in ("secstream_delivery_latency_seconds_bucket",
                     "secstream_connections_active",
                     "secstream_connection_duration_seconds_bucket"):
        assert required in used


def test_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "secstream"
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in dashboard["panels"]:
        assert panel["type"] in {"timeseries", "stat"}
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel["targets"]:
            for var in re.findall(r"\$(\w+)", target["expr"]):
                assert var in variables, var
