"""Settings from the environment, and ``secstream serve`` refusing bad settings (section 1)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from secstream.config import Settings
from secstream.errors import ConfigError

SECRET = {"SECSTREAM_JWT_SECRET": "a-test-secret-that-is-long-enough-000"}


def test_defaults() -> None:
    settings = Settings.from_env(SECRET)
    assert settings.redis_url is None
    assert settings.key_prefix == "secstream"
    assert settings.heartbeat_interval == 20 and settings.heartbeat_timeout == 10
    assert settings.token_expiry_warning == 60
    assert (settings.client_rate, settings.client_burst) == (20, 40)
    assert settings.retention_seconds == 86400 and settings.retention_maxlen == 1_000_000
    assert settings.replay_limit == 10_000 and settings.trim_interval == 60
    assert settings.max_queue_bytes == 1_048_576
    assert (settings.publish_rate, settings.publish_burst) == (1000, 2000)
    assert settings.critical_retention_seconds == 604_800
    assert settings.max_connections == 10_000
    assert settings.max_connections_per_user == 100 and settings.handshake_rate == 10
    assert settings.trusted_proxies == () and settings.allowed_origins == ()
    assert settings.max_event_bytes == 65536 and settings.jwt_leeway == 0
    assert settings.data_dir == Path(".secstream")
    assert settings.demo is False


def test_every_contract_variable_is_read(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_text("not checked here")
    env = {
        "SECSTREAM_REDIS_URL": "redis://example:6380/2",
        "SECSTREAM_KEY_PREFIX": "svc",
        "SECSTREAM_JWT_SECRET": "s3cret",
        "SECSTREAM_JWT_PUBLIC_KEY_FILE": str(key_file),
        "SECSTREAM_JWT_AUDIENCE": "aud",
        "SECSTREAM_JWT_ISSUER": "iss",
        "SECSTREAM_HEARTBEAT_INTERVAL": "2.5",
        "SECSTREAM_HEARTBEAT_TIMEOUT": "1.5",
        "SECSTREAM_TOKEN_EXPIRY_WARNING": "5",
        "SECSTREAM_CLIENT_RATE": "3",
        "SECSTREAM_CLIENT_BURST": "6",
        "SECSTREAM_RETENTION_SECONDS": "100",
        "SECSTREAM_RETENTION_MAXLEN": "1000",
        "SECSTREAM_REPLAY_LIMIT": "50",
        "SECSTREAM_TRIM_INTERVAL": "7",
        "SECSTREAM_MAX_QUEUE_BYTES": "4096",
        "SECSTREAM_PUBLISH_RATE": "10",
        "SECSTREAM_PUBLISH_BURST": "20",
        "SECSTREAM_CRITICAL_RETENTION_SECONDS": "1000",
        "SECSTREAM_MAX_CONNECTIONS": "9",
        "SECSTREAM_DATA_DIR": str(tmp_path / "data"),
        "SECSTREAM_JWT_LEEWAY": "4",
        "SECSTREAM_MAX_CONNECTIONS_PER_USER": "0",
        "SECSTREAM_HANDSHAKE_RATE": "3",
        "SECSTREAM_TRUSTED_PROXIES": "10.0.0.1, 192.168.0.0/16,::1",
        "SECSTREAM_ALLOWED_ORIGINS": "https://app.example,http://localhost:5173",
        "SECSTREAM_MAX_EVENT_BYTES": "1000",
        "SECSTREAM_HEADER_TIMEOUT": "2.5",
        "SECSTREAM_MAX_PENDING_CONNECTIONS": "7",
        "SECSTREAM_BODY_TIMEOUT": "30",
    }
    s = Settings.from_env(env)
    assert s.jwt_leeway == 4 and s.max_connections_per_user == 0 and s.handshake_rate == 3
    assert s.trusted_proxies == ("10.0.0.1", "192.168.0.0/16", "::1")
    assert s.allowed_origins == ("https://app.example", "http://localhost:5173")
    assert s.max_event_bytes == 1000
    assert (s.header_timeout, s.max_pending_connections, s.body_timeout) == (2.5, 7, 30)
    assert s.redis_url == "redis://example:6380/2" and s.key_prefix == "svc"
    assert s.jwt_secret == "s3cret" and s.jwt_public_key_file == key_file
    assert s.jwt_audience == "aud" and s.jwt_issuer == "iss"
    assert (s.heartbeat_interval, s.heartbeat_timeout, s.token_expiry_warning) == (2.5, 1.5, 5)
    assert (s.client_rate, s.client_burst) == (3, 6)
    assert (s.retention_seconds, s.retention_maxlen, s.replay_limit) == (100, 1000, 50)
    assert (s.trim_interval, s.max_queue_bytes) == (7, 4096)
    assert (s.publish_rate, s.publish_burst) == (10, 20)
    assert (s.critical_retention_seconds, s.max_connections) == (1000, 9)
    assert s.data_dir == tmp_path / "data"


def test_overrides_win_over_the_environment() -> None:
    env = {"SECSTREAM_REDIS_URL": "redis://a:1/0", "SECSTREAM_PORT": "9000"}
    s = Settings.from_env(env, redis_url="redis://b:2/0", port=None, demo=True)
    assert s.redis_url == "redis://b:2/0" and s.port == 9000 and s.demo is True


def test_empty_values_mean_the_default() -> None:
    settings = Settings.from_env({**SECRET, "SECSTREAM_HEARTBEAT_INTERVAL": ""})
    assert settings.heartbeat_interval == 20


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("SECSTREAM_HEARTBEAT_INTERVAL", "soon"),
        ("SECSTREAM_HEARTBEAT_TIMEOUT", "0"),
        ("SECSTREAM_CLIENT_BURST", "1.5"),
        ("SECSTREAM_REPLAY_LIMIT", "-3"),
        ("SECSTREAM_RETENTION_MAXLEN", "lots"),
        ("SECSTREAM_MAX_QUEUE_BYTES", "1MB"),
        ("SECSTREAM_PUBLISH_RATE", "fast"),
        ("SECSTREAM_TOKEN_EXPIRY_WARNING", "-1"),
        ("SECSTREAM_REDIS_URL", "http://localhost"),
        ("SECSTREAM_KEY_PREFIX", "a b"),
        ("SECSTREAM_JWT_PUBLIC_KEY_FILE", "/no/such/file.pem"),
        ("SECSTREAM_JWT_LEEWAY", "-5"),
        ("SECSTREAM_JWT_LEEWAY", "inf"),
        ("SECSTREAM_MAX_CONNECTIONS_PER_USER", "-1"),
        ("SECSTREAM_TRUSTED_PROXIES", "10.0.0.1,not-an-address"),
        ("SECSTREAM_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("SECSTREAM_ALLOWED_ORIGINS", "app.example"),
        ("SECSTREAM_MAX_EVENT_BYTES", "0"),
        ("SECSTREAM_HEADER_TIMEOUT", "nan"),
        ("SECSTREAM_MAX_PENDING_CONNECTIONS", "0"),
    ],
)
def test_bad_values_raise_naming_the_variable(key: str, raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**SECRET, key: raw})
    assert info.value.key == key
    assert key in str(info.value)


def test_no_jwt_key_without_demo_names_the_setting() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({})
    assert info.value.key == "SECSTREAM_JWT_SECRET"
    assert Settings.from_env({}, demo=True).jwt_secret is None


def test_the_demo_is_never_on_by_environment() -> None:
    """Contract section 1: dev tokens for anyone only with the --demo flag."""
    with pytest.raises(ConfigError):
        Settings.from_env({"SECSTREAM_DEMO": "true"})
    assert Settings.from_env({**SECRET, "SECSTREAM_DEMO": "true"}).demo is False


# -- secstream serve ------------------------------------------------------------------------


def run_serve(tmp_path: Path, *args: str, **env: str) -> tuple[int, str, float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SECSTREAM_")}
    clean.update(env)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "secstream", "serve", "--port", "0", *args],
        cwd=tmp_path,
        env=clean,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc.returncode, proc.stderr, time.monotonic() - started


def test_serve_without_a_jwt_key_exits_2(tmp_path: Path) -> None:
    code, stderr, took = run_serve(tmp_path)
    assert code == 2, stderr
    assert "SECSTREAM_JWT_SECRET" in stderr
    assert took < 10
    assert not (tmp_path / ".secstream").exists()


@pytest.mark.parametrize(
    ("key", "extra"),
    [
        ("SECSTREAM_HEARTBEAT_INTERVAL", []),
        ("SECSTREAM_CLIENT_BURST", []),
        ("SECSTREAM_REPLAY_LIMIT", ["--demo"]),
    ],
)
def test_serve_with_a_setting_that_does_not_parse_exits_2(
    tmp_path: Path, key: str, extra: list[str]
) -> None:
    code, stderr, took = run_serve(tmp_path, *extra, **SECRET, **{key: "not-a-number"})
    assert code == 2, stderr
    assert key in stderr
    assert took < 10


def test_serve_with_a_bad_redis_url_exits_2(tmp_path: Path) -> None:
    code, stderr, _ = run_serve(tmp_path, "--redis-url", "localhost:6379", **SECRET)
    assert code == 2, stderr
    assert "SECSTREAM_REDIS_URL" in stderr


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SECSTREAM_LOG_FORMAT", "xml"),
        ("SECSTREAM_LOG_LEVEL", "chatty"),
        ("SECSTREAM_STATUS_INTERVAL", "-1"),
        ("SECSTREAM_AUDIT_RETENTION_SECONDS", "0"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
    ],
)
def test_serve_with_a_bad_observability_setting_exits_2(
    tmp_path: Path, key: str, value: str
) -> None:
    code, stderr, _ = run_serve(tmp_path, **SECRET, **{key: value})
    assert code == 2, stderr
    assert key in stderr


def test_observability_settings_parse() -> None:
    env = {**SECRET, "SECSTREAM_LOG_FORMAT": "JSON", "SECSTREAM_LOG_LEVEL": "Debug",
           "SECSTREAM_STATUS_INTERVAL": "0", "SECSTREAM_AUDIT_RETENTION_SECONDS": "60"}
    settings = Settings.from_env(env)
    assert (settings.log_format, settings.log_level) == ("json", "debug")
    assert settings.status_interval == 0 and settings.audit_retention_seconds == 60
    assert Settings.from_env(SECRET).status_interval == 30


@pytest.mark.slow
def test_serve_exits_when_its_port_is_taken(tmp_path: Path) -> None:
    """A failed bind ends the process: shutdown never waits forever on its tasks."""
    import socket

    from secstream.redis_server import RedisServer

    with socket.socket() as taken, RedisServer(tmp_path / "redis") as redis:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"SECSTREAM_JWT_SECRET": "x" * 32, "PATH": "/usr/bin:/bin"}
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "secstream", "serve", "--port", str(port),
             "--redis-url", redis.url],
            env=env, capture_output=True, timeout=30,
        )
        took = time.monotonic() - started
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert took < 20, took


# -- OpenID Connect and claims (issue 12) -----------------------------------------------------

OIDC = {"SECSTREAM_OIDC_ISSUER": "https://kc.example/realms/soc", "SECSTREAM_JWT_AUDIENCE": "ss"}


def test_oidc_and_claim_settings_parse() -> None:
    settings = Settings.from_env({
        **OIDC,
        "SECSTREAM_OIDC_CLIENT_ID": "secstream-dashboard",
        "SECSTREAM_OIDC_SCOPE": "openid  profile api://secstream/access",
        "SECSTREAM_ROLES_CLAIM": "realm_access.roles",
        "SECSTREAM_GROUPS_CLAIM": "https://secstream.example/groups",
        "SECSTREAM_ROLE_MAP": " soc-lead=admin, soc-lead = publisher ,SecStream.Viewer=viewer,",
    })
    assert settings.oidc_issuer == "https://kc.example/realms/soc"
    assert settings.oidc_client_id == "secstream-dashboard"
    assert settings.oidc_scope == "openid profile api://secstream/access"
    assert settings.roles_claim == "realm_access.roles"
    assert settings.groups_claim == "https://secstream.example/groups"
    assert settings.role_map == (
        ("soc-lead", "admin"), ("soc-lead", "publisher"), ("SecStream.Viewer", "viewer"),
    )
    # The issuer alone is a JWT key source: no secret or key file needed.
    assert settings.jwt_secret is None and settings.jwt_public_key_file is None
    defaults = Settings.from_env(SECRET)
    assert (defaults.roles_claim, defaults.groups_claim, defaults.role_map) == (
        "roles", "groups", ()
    )
    assert defaults.oidc_issuer is None and defaults.oidc_scope == "openid profile offline_access"
    loopback = Settings.from_env({**OIDC, "SECSTREAM_OIDC_ISSUER": "http://127.0.0.1:8080/r"})
    assert loopback.oidc_issuer == "http://127.0.0.1:8080/r"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"SECSTREAM_OIDC_ISSUER": "https://kc.example/realms/soc"}, "SECSTREAM_JWT_AUDIENCE"),
        ({**OIDC, "SECSTREAM_OIDC_ISSUER": "http://kc.example/realms/soc"},
         "SECSTREAM_OIDC_ISSUER"),
        ({**OIDC, "SECSTREAM_OIDC_ISSUER": "kc.example"}, "SECSTREAM_OIDC_ISSUER"),
        ({**OIDC, "SECSTREAM_OIDC_ISSUER": "https://kc.example/?realm=x"},
         "SECSTREAM_OIDC_ISSUER"),
        ({**OIDC, "SECSTREAM_OIDC_ISSUER": "https://u:p@kc.example/"}, "SECSTREAM_OIDC_ISSUER"),
        ({**OIDC, "SECSTREAM_OIDC_ISSUER": "https://kc.example:99999/"},
         "SECSTREAM_OIDC_ISSUER"),
        ({**OIDC, "SECSTREAM_OIDC_ISSUER": "https://kc.example/" + "r" * 2048},
         "SECSTREAM_OIDC_ISSUER"),
        ({**SECRET, "SECSTREAM_OIDC_CLIENT_ID": "dashboard"}, "SECSTREAM_OIDC_CLIENT_ID"),
        ({**OIDC, "SECSTREAM_OIDC_SCOPE": "profile"}, "SECSTREAM_OIDC_SCOPE"),
        ({**SECRET, "SECSTREAM_ROLES_CLAIM": "realm_access..roles"}, "SECSTREAM_ROLES_CLAIM"),
        ({**SECRET, "SECSTREAM_ROLES_CLAIM": ".roles"}, "SECSTREAM_ROLES_CLAIM"),
        ({**SECRET, "SECSTREAM_GROUPS_CLAIM": "g" * 257}, "SECSTREAM_GROUPS_CLAIM"),
        ({**SECRET, "SECSTREAM_ROLE_MAP": "soc-lead"}, "SECSTREAM_ROLE_MAP"),
        ({**SECRET, "SECSTREAM_ROLE_MAP": "soc-lead=admin,=viewer"}, "SECSTREAM_ROLE_MAP"),
        ({**SECRET, "SECSTREAM_ROLE_MAP": "soc-lead=root"}, "SECSTREAM_ROLE_MAP"),
        ({**SECRET, "SECSTREAM_ROLE_MAP": "a=admin=x"}, "SECSTREAM_ROLE_MAP"),
        ({**SECRET, "SECSTREAM_ROLE_MAP": ",".join(f"r{i}=viewer" for i in range(257))},
         "SECSTREAM_ROLE_MAP"),
        ({**SECRET, "SECSTREAM_ROLE_MAP": "r" * 257 + "=viewer"}, "SECSTREAM_ROLE_MAP"),
    ],
)
def test_bad_oidc_and_claim_settings_name_the_variable(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.key == key, str(info.value)


def test_the_role_map_takes_its_most_entries() -> None:
    raw = ",".join(f"r{i}=viewer" for i in range(256))
    assert len(Settings.from_env({**SECRET, "SECSTREAM_ROLE_MAP": raw}).role_map) == 256


def test_the_demo_refuses_an_oidc_issuer() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(OIDC, demo=True)
    assert info.value.key == "SECSTREAM_OIDC_ISSUER"


@pytest.mark.parametrize(
    ("env", "extra", "key"),
    [
        ({"SECSTREAM_OIDC_ISSUER": "https://kc.example/realms/soc"}, [],
         "SECSTREAM_JWT_AUDIENCE"),
        ({**SECRET, "SECSTREAM_ROLE_MAP": "soc-lead"}, [], "SECSTREAM_ROLE_MAP"),
        (OIDC, ["--demo"], "SECSTREAM_OIDC_ISSUER"),
    ],
)
def test_serve_with_a_bad_oidc_setting_exits_2(
    tmp_path: Path, env: dict[str, str], extra: list[str], key: str
) -> None:
    code, stderr, took = run_serve(tmp_path, *extra, **env)
    assert code == 2, stderr
    assert key in stderr
    assert took < 10
