"""compose.yaml against the Compose specification (no Docker engine needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"


def _compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def test_compose_file_matches_the_compose_spec() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_redis_persists_with_append_only_file() -> None:
    redis = _compose()["services"]["redis"]
    command = redis["command"]
    words = command.split() if isinstance(command, str) else command
    assert words[words.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_secstream_builds_from_this_repo() -> None:
    service = _compose()["services"]["secstream"]
    build = service["build"]
    assert (build if isinstance(build, str) else build["context"]) == "."
    assert (ROOT / "Dockerfile").is_file()
    assert service["environment"]["SECSTREAM_REDIS_URL"] == "redis://redis:6379/0"
    assert service["environment"]["SECSTREAM_JWT_SECRET"].startswith("${SECSTREAM_JWT_SECRET:?")
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "/health/ready" in " ".join(service["healthcheck"]["test"])
    assert service["stop_grace_period"] == "15s"


def test_traces_go_through_a_collector_to_jaeger() -> None:
    services = _compose()["services"]
    env = services["secstream"]["environment"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert "otel-collector" in services["secstream"]["depends_on"]
    collector = services["otel-collector"]
    (mount,) = collector["volumes"]
    source, target, _ = mount.split(":")
    assert (ROOT / source).is_file() and target == "/etc/otelcol/config.yaml"
    assert f"--config={target}" in collector["command"]
    config = yaml.safe_load((ROOT / source).read_text())
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    jaeger_exporter = config["exporters"]["otlp/jaeger"]
    assert jaeger_exporter["endpoint"] == "jaeger:4317"
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"] and "otlp/jaeger" in pipeline["exporters"]
    assert all(name in config["exporters"] for name in pipeline["exporters"])
    jaeger = services["jaeger"]
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert "16686:16686" in jaeger["ports"]
