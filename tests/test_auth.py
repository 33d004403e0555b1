from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.jwk import RSAKey

from secstream.auth import Authenticator, Principal
from secstream.config import Settings
from secstream.errors import AuthError, ConfigError, Forbidden

SECRET = "a-test-secret-that-is-long-enough"

# Tokens are built here by hand (not with joserfc), so the tests check interop too.


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: dict[str, Any], payload: bytes, sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(payload)}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def hs256(claims: dict[str, Any], secret: str | bytes = SECRET, **header: Any) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return compact(
        {"alg": "HS256", "typ": "JWT", **header},
        json.dumps(claims).encode(),
        lambda msg: hmac.new(key, msg, hashlib.sha256).digest(),
    )


def rs256(claims: dict[str, Any], key: rsa.RSAPrivateKey, **header: Any) -> str:
    return compact(
        {"alg": "RS256", "typ": "JWT", **header},
        json.dumps(claims).encode(),
        lambda msg: key.sign(msg, padding.PKCS1v15(), hashes.SHA256()),
    )


def es256(claims: dict[str, Any], key: ec.EllipticCurvePrivateKey, **header: Any) -> str:
    def sign(msg: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(msg, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    return compact({"alg": "ES256", "typ": "JWT", **header}, json.dumps(claims).encode(), sign)


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "u-7", "exp": time.time() + 600, "roles": ["viewer"]}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, str]:
    numbers = key.public_key().public_numbers()

    def enc(n: int) -> str:
        return _b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))

    return {"kty": "RSA", "kid": kid, "use": "sig", "n": enc(numbers.n), "e": enc(numbers.e)}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def rsa_pem_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "rsa.pem"
    path.write_bytes(pem(rsa_key))
    return path


@pytest.fixture
def ec_pem_file(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> Path:
    path = tmp_path / "ec.pem"
    path.write_bytes(pem(ec_key))
    return path


@pytest.fixture
def jwks_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, rsa_key2: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk(rsa_key, "k1"), jwk(rsa_key2, "k2")]}))
    return path


@pytest.fixture
def auth() -> Authenticator:
    return Authenticator(secret=SECRET)


def reason(auth: Authenticator, token: str | None) -> str:
    with pytest.raises(AuthError) as info:
        auth.authenticate(token)
    assert type(info.value) is AuthError
    return str(info.value)


# HS256 and claims


def test_hs256_token_gives_principal(auth: Authenticator) -> None:
    exp = time.time() + 600
    p = auth.authenticate(hs256(claims(exp=exp, roles=["analyst", "viewer"], groups=["blue"])))
    assert p == Principal(
        sub="u-7",
        roles=frozenset({"analyst", "viewer"}),
        groups=frozenset({"blue"}),
        exp=exp,
        receivable=p.receivable,
    )
    assert "system.alert" in p.receivable and "test.progress" in p.receivable
    assert not p.may_publish


def test_roles_and_groups_are_optional(auth: Authenticator) -> None:
    p = auth.authenticate(hs256({"sub": "svc", "exp": int(time.time()) + 60}))
    assert p.roles == frozenset() and p.groups == frozenset() and p.receivable == frozenset()


@pytest.mark.parametrize("token", [None, ""])
def test_missing_token(auth: Authenticator, token: str | None) -> None:
    assert reason(auth, token) == "missing token"


@pytest.mark.parametrize(
    "token",
    [
        "abc",
        "a.b.c",
        "a.b.c.d",
        "ééé.ééé.ééé",
        _b64(b'{"alg":"HS256"') + ".e30.sig",
        _b64(b'{"typ":"JWT"}') + ".e30.sig",
        _b64(b'{"alg":5}') + ".e30.sig",
        _b64(b'{"alg":"HS256","kid":5}') + ".e30.sig",
        _b64(b'{"alg":"HS256","crit":["exp"],"exp":1}') + ".e30.sig",
    ],
)
def test_malformed_token(auth: Authenticator, token: str) -> None:
    assert reason(auth, token) == "malformed token"


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b'"sub"'])
def test_signed_payload_that_is_no_claims_object(auth: Authenticator, payload: bytes) -> None:
    token = compact(
        {"alg": "HS256"}, payload, lambda m: hmac.new(SECRET.encode(), m, hashlib.sha256).digest()
    )
    assert reason(auth, token) == "malformed token"


def test_bad_signature(auth: Authenticator) -> None:
    assert reason(auth, hs256(claims(), secret="another-secret-of-some-length")) == "bad signature"
    header, payload, signature = hs256(claims()).split(".")
    forged = _b64(json.dumps(claims(roles=["admin"])).encode())
    assert reason(auth, f"{header}.{forged}.{signature}") == "bad signature"
    assert reason(auth, f"{header}.{payload}.") == "bad signature"


def test_expired(auth: Authenticator) -> None:
    assert reason(auth, hs256(claims(exp=time.time() - 1))) == "token expired"


def test_leeway_and_nbf() -> None:
    lenient = Authenticator(secret=SECRET, leeway=30)
    assert lenient.authenticate(hs256(claims(exp=time.time() - 10))).sub == "u-7"
    assert lenient.authenticate(hs256(claims(nbf=time.time() + 10))).sub == "u-7"
    strict = Authenticator(secret=SECRET)
    assert reason(strict, hs256(claims(nbf=time.time() + 10))) == "token not yet valid"
    assert strict.authenticate(hs256(claims(nbf=time.time() - 10))).sub == "u-7"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"sub": ...}, "missing claim: sub"),
        ({"sub": ""}, "invalid claim: sub"),
        ({"sub": 7}, "invalid claim: sub"),
        ({"sub": None}, "invalid claim: sub"),
        ({"exp": ...}, "missing claim: exp"),
        ({"exp": "2030-01-01"}, "invalid claim: exp"),
        ({"exp": True}, "invalid claim: exp"),
        ({"exp": None}, "invalid claim: exp"),
        ({"exp": float("inf")}, "invalid claim: exp"),
        ({"exp": float("nan")}, "invalid claim: exp"),
        ({"exp": 10**400}, "invalid claim: exp"),
        ({"nbf": "now"}, "invalid claim: nbf"),
        ({"roles": ["admin", 1]}, "invalid claim: roles"),
        ({"roles": {"admin": True}}, "invalid claim: roles"),
        ({"roles": None}, "invalid claim: roles"),
        ({"groups": 7}, "invalid claim: groups"),
        ({"groups": [["blue"]]}, "invalid claim: groups"),
    ],
)
def test_bad_claims(auth: Authenticator, overrides: dict[str, Any], expected: str) -> None:
    assert reason(auth, hs256(claims(**overrides))) == expected


def test_audience_and_issuer() -> None:
    auth = Authenticator(secret=SECRET, audience="secstream", issuer="https://idp.example")
    iss = "https://idp.example"
    assert auth.authenticate(hs256(claims(aud="secstream", iss=iss))).sub == "u-7"
    assert auth.authenticate(hs256(claims(aud=["other", "secstream"], iss=iss))).sub == "u-7"
    assert reason(auth, hs256(claims(iss=iss))) == "invalid audience"
    assert reason(auth, hs256(claims(aud="other", iss=iss))) == "invalid audience"
    assert reason(auth, hs256(claims(aud=["other"], iss=iss))) == "invalid audience"
    assert reason(auth, hs256(claims(aud="secstream"))) == "invalid issuer"
    assert reason(auth, hs256(claims(aud="secstream", iss="https://evil"))) == "invalid issuer"


def test_aud_and_iss_ignored_when_not_configured(auth: Authenticator) -> None:
    assert auth.authenticate(hs256(claims(aud="anything", iss="anyone"))).sub == "u-7"


# Public keys


def test_rs256_pem(rsa_pem_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    auth = Authenticator(public_key_file=rsa_pem_file)
    assert auth.algorithms == {"RS256"}
    assert auth.authenticate(rs256(claims(), rsa_key)).sub == "u-7"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert reason(auth, rs256(claims(), other)) == "bad signature"


def test_es256_pem(ec_pem_file: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    auth = Authenticator(public_key_file=ec_pem_file)
    assert auth.algorithms == {"ES256"}
    assert auth.authenticate(es256(claims(), ec_key)).sub == "u-7"
    assert reason(auth, es256(claims(), ec.generate_private_key(ec.SECP256R1()))) == "bad signature"


def test_algorithm_must_fit_the_key(
    rsa_pem_file: Path, ec_pem_file: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    assert reason(Authenticator(public_key_file=ec_pem_file), rs256(claims(), rsa_key)) == (
        "unsupported algorithm"
    )
    assert reason(Authenticator(secret=SECRET), rs256(claims(), rsa_key)) == (
        "unsupported algorithm"
    )
    assert reason(Authenticator(public_key_file=rsa_pem_file), hs256(claims())) == (
        "unsupported algorithm"
    )


def test_jwks_selects_key_by_kid(
    jwks_file: Path, rsa_key: rsa.RSAPrivateKey, rsa_key2: rsa.RSAPrivateKey
) -> None:
    auth = Authenticator(public_key_file=jwks_file)
    assert auth.authenticate(rs256(claims(sub="a"), rsa_key, kid="k1")).sub == "a"
    assert auth.authenticate(rs256(claims(sub="b"), rsa_key2, kid="k2")).sub == "b"
    assert reason(auth, rs256(claims(), rsa_key2, kid="k1")) == "bad signature"
    assert reason(auth, rs256(claims(), rsa_key, kid="k3")) == "unknown signing key"
    # without a kid every key of the algorithm is tried
    assert auth.authenticate(rs256(claims(sub="c"), rsa_key2)).sub == "c"


def test_jwks_skips_unusable_entries(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "jwks.json"
    entries = [
        {**jwk(rsa_key, "enc"), "use": "enc"},
        {**jwk(rsa_key, "wrong-alg"), "alg": "ES256"},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        "not a key",
        jwk(rsa_key, "good"),
    ]
    path.write_text(json.dumps({"keys": entries}))
    with caplog.at_level(logging.WARNING, logger="secstream.auth"):
        auth = Authenticator(public_key_file=path)
    assert auth.algorithms == {"RS256"}
    assert len([r for r in caplog.records if "JWKS" in r.message]) == 4
    assert auth.authenticate(rs256(claims(), rsa_key, kid="good")).sub == "u-7"
    assert reason(auth, hs256(claims(), kid="hmac")) == "unsupported algorithm"


def test_single_jwk_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "key.json"
    path.write_text(json.dumps(jwk(rsa_key, "only")))
    auth = Authenticator(public_key_file=path)
    assert auth.authenticate(rs256(claims(), rsa_key, kid="only")).sub == "u-7"


@pytest.mark.parametrize("with_secret", [False, True])
def test_hs256_signed_with_public_key_text_is_refused(
    rsa_pem_file: Path, rsa_key: rsa.RSAPrivateKey, with_secret: bool
) -> None:
    auth = Authenticator(secret=SECRET if with_secret else None, public_key_file=rsa_pem_file)
    forged = hs256(claims(roles=["admin"]), secret=rsa_pem_file.read_bytes())
    with pytest.raises(AuthError):
        auth.authenticate(forged)


def test_secret_and_public_key_together(rsa_pem_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    auth = Authenticator(secret=SECRET, public_key_file=rsa_pem_file)
    assert auth.algorithms == {"HS256", "RS256"}
    assert auth.authenticate(hs256(claims(sub="h"))).sub == "h"
    assert auth.authenticate(rs256(claims(sub="r"), rsa_key)).sub == "r"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(auth: Authenticator, rsa_pem_file: Path, alg: str) -> None:
    token = compact({"alg": alg, "typ": "JWT"}, json.dumps(claims()).encode(), lambda m: b"")
    assert reason(auth, token) == "unsupported algorithm"
    assert reason(Authenticator(public_key_file=rsa_pem_file), token) == "unsupported algorithm"


# Key configuration


def test_no_key_at_all() -> None:
    with pytest.raises(ConfigError) as info:
        Authenticator()
    assert info.value.key == "SECSTREAM_JWT_SECRET"


def test_bad_secrets(rsa_pem_file: Path) -> None:
    for secret in ("", rsa_pem_file.read_text()):
        with pytest.raises(ConfigError) as info:
            Authenticator(secret=secret)
        assert info.value.key == "SECSTREAM_JWT_SECRET"


def test_a_secret_under_32_bytes_is_refused() -> None:
    for short in ("x", "short", "s" * 31, "é" * 15):
        with pytest.raises(ConfigError) as info:
            Authenticator(secret=short)
        assert info.value.key == "SECSTREAM_JWT_SECRET" and "32 bytes" in str(info.value)
    auth = Authenticator(secret="s" * 32)
    assert auth.authenticate(hs256(claims(), secret="s" * 32)).sub == "u-7"


@pytest.mark.parametrize("members", [("d",), ("p", "q"), ("dp", "dq", "qi")])
def test_a_jwks_with_private_parts_is_refused(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, members: tuple[str, ...]
) -> None:
    private = RSAKey.import_key(rsa_key).as_dict(private=True)
    public = {k: v for k, v in private.items() if k in ("kty", "n", "e")}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**public, **{m: private[m] for m in members}}]}))
    with pytest.raises(ConfigError) as info:
        Authenticator(public_key_file=path)
    assert info.value.key == "SECSTREAM_JWT_PUBLIC_KEY_FILE" and "private" in str(info.value)
    path.write_text(json.dumps({"keys": [public]}))
    Authenticator(public_key_file=path)  # the public half alone loads


def test_a_jwks_with_a_shared_secret_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{"kty": "oct", "k": _b64(SECRET.encode())}]}))
    with pytest.raises(ConfigError) as info:
        Authenticator(public_key_file=path)
    assert info.value.key == "SECSTREAM_JWT_PUBLIC_KEY_FILE"


@pytest.mark.parametrize(
    "content",
    [
        b"not a key",
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        b'{"keys": 5}',
        b'{"keys": []}',
        b"{broken json",
    ],
)
def test_bad_public_key_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "key"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        Authenticator(public_key_file=path)
    assert info.value.key == "SECSTREAM_JWT_PUBLIC_KEY_FILE"


def test_private_key_file_or_missing_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "private.pem"
    path.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for candidate in (path, tmp_path / "missing.pem"):
        with pytest.raises(ConfigError) as info:
            Authenticator(public_key_file=candidate)
        assert info.value.key == "SECSTREAM_JWT_PUBLIC_KEY_FILE"


# Roles


def principal(auth: Authenticator, *roles: str) -> Principal:
    return auth.authenticate(hs256(claims(roles=list(roles))))


@pytest.mark.parametrize(
    ("roles", "may_receive", "may_publish"),
    [
        (("admin",), True, True),
        (("analyst",), True, False),
        (("viewer",), True, False),
        (("publisher",), False, True),
        (("publisher", "viewer"), True, True),
        (("root",), False, False),
        ((), False, False),
    ],
)
def test_role_rules(
    auth: Authenticator, roles: tuple[str, ...], may_receive: bool, may_publish: bool
) -> None:
    p = principal(auth, *roles)
    for check, allowed in (
        (auth.authorize_receiver, may_receive),
        (auth.authorize_publisher, may_publish),
    ):
        if allowed:
            check(p)
        else:
            with pytest.raises(Forbidden):
                check(p)
    assert p.may_publish is may_publish


def test_viewer_and_analyst_receive_different_types(auth: Authenticator) -> None:
    viewer, analyst = principal(auth, "viewer"), principal(auth, "analyst")
    assert "system.alert" not in viewer.receivable
    assert "system.alert" in analyst.receivable
    assert principal(auth, "viewer", "analyst").receivable == analyst.receivable


# Minting


def test_mint_round_trip() -> None:
    auth = Authenticator(secret=SECRET, audience="secstream", issuer="demo")
    before = time.time()
    token, expires_at = auth.mint("u-1", ["analyst"], ["red"], expires_in=120)
    assert before + 120 <= expires_at <= time.time() + 121
    p = auth.authenticate(token)
    assert (p.sub, p.exp) == ("u-1", expires_at)
    assert p.roles == frozenset({"analyst"}) and p.groups == frozenset({"red"})


def test_mint_needs_a_secret(rsa_pem_file: Path) -> None:
    with pytest.raises(RuntimeError):
        Authenticator(public_key_file=rsa_pem_file).mint("u-1", ["viewer"])


def test_mint_rejects_nonsense(auth: Authenticator) -> None:
    with pytest.raises(ValueError):
        auth.mint("", ["viewer"])
    with pytest.raises(ValueError):
        auth.mint("u-1", ["viewer"], expires_in=0)


def test_from_settings(rsa_pem_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    auth = Authenticator.from_settings(Settings(jwt_secret=SECRET, jwt_audience="a"))
    assert reason(auth, hs256(claims())) == "invalid audience"
    by_key = Authenticator.from_settings(Settings(jwt_public_key_file=rsa_pem_file))
    assert by_key.authenticate(rs256(claims(), rsa_key)).sub == "u-7"
    demo = Authenticator.from_settings(Settings(demo=True))
    token, _ = demo.mint("u-1", ["admin"])
    assert demo.authenticate(token).may_publish


# -- claim paths and the role map (issue 12) -------------------------------------------------


def test_roles_and_groups_from_dotted_claim_paths() -> None:
    from secstream.claims import RoleMap

    auth = Authenticator(
        secret=SECRET,
        roles_claim="realm_access.roles",
        groups_claim="https://secstream.example/groups",
        role_map=RoleMap([("soc-lead", "admin"), ("soc-lead", "publisher"),
                          ("soc-analyst", "analyst")]),
    )
    token = hs256(claims(
        roles=["viewer"],  # not the configured path: ignored
        realm_access={"roles": ["soc-lead", "offline_access"]},
        **{"https://secstream.example/groups": ["blue-team"]},
    ))
    p = auth.authenticate(token)
    assert p.roles == {"admin", "publisher", "offline_access"}
    assert p.groups == {"blue-team"}
    assert p.may_publish and "system.alert" in p.receivable
    # A single string is one role; a missing path is no role (403 later, not 401).
    single = auth.authenticate(hs256(claims(realm_access={"roles": "soc-analyst"})))
    assert single.roles == {"analyst"}
    assert auth.authenticate(hs256(claims(realm_access={}))).roles == frozenset()
    assert auth.authenticate(hs256(claims())).roles == frozenset()
    # Wrong shapes on the path are refused.
    assert reason(auth, hs256(claims(realm_access=["soc-lead"]))) == "invalid claim: realm_access"
    assert reason(auth, hs256(claims(realm_access={"roles": [1]}))) == (
        "invalid claim: realm_access.roles"
    )
    # Nested paths may also name a namespaced claim's member.
    nested = Authenticator(secret=SECRET, roles_claim="https://secstream.example/claims.roles")
    token = hs256(claims(**{"https://secstream.example/claims": {"roles": ["analyst"]}}))
    assert nested.authenticate(token).roles == {"analyst"}


def test_the_role_map_passes_unmapped_roles_through() -> None:
    from secstream.claims import RoleMap

    role_map = RoleMap([("admin", "viewer")])
    assert role_map.apply(frozenset({"admin", "analyst"})) == {"viewer", "analyst"}
    assert RoleMap().apply(frozenset({"admin"})) == {"admin"}


def test_dev_tokens_carry_roles_where_the_service_reads_them() -> None:
    auth = Authenticator(secret=SECRET, roles_claim="realm_access.roles", groups_claim="grp")
    token, _ = auth.mint("u-1", ["analyst"], ["blue"])
    p = auth.authenticate(token)
    assert p.roles == {"analyst"} and p.groups == {"blue"}


# The cache of verified tokens


def cached(token: str) -> bytes:
    """A token's key in the cache: its SHA-256, never the token itself."""
    return hashlib.sha256(token.encode()).digest()


def test_the_cache_holds_no_token(auth: Authenticator) -> None:
    token = hs256(claims())
    assert auth.authenticate(token).sub == "u-7"
    assert list(auth._verified) == [cached(token)]


def test_principals_with_the_same_roles_share_one_set(auth: Authenticator) -> None:
    one = auth.authenticate(hs256(claims(sub="one", roles=["viewer", "admin"])))
    two = auth.authenticate(hs256(claims(sub="two", roles=["admin", "viewer"])))
    assert one.roles is two.roles


def test_the_shared_sets_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from secstream import claims as claims_module

    monkeypatch.setattr(claims_module, "_shared", {})
    for n in range(claims_module.MAX_SHARED + 5):
        claims_module.shared(frozenset({f"role-{n}"}))
    assert len(claims_module._shared) == claims_module.MAX_SHARED
    late = frozenset({"late"})
    assert claims_module.shared(late) is late
    assert claims_module.shared(frozenset({"late"})) is not late  # not kept: no room
    early = frozenset({"role-0"})
    assert claims_module.shared(early) is not early  # the one kept first


def test_a_cached_token_is_refused_once_it_expires() -> None:
    auth = Authenticator(secret=SECRET, leeway=0.3)
    token = hs256(claims(exp=time.time() + 0.4))
    assert auth.authenticate(token).sub == "u-7"
    assert auth.authenticate(token).sub == "u-7"  # from the cache
    time.sleep(0.5)
    assert auth.authenticate(token).sub == "u-7"  # past exp, within the leeway
    time.sleep(0.3)
    assert reason(auth, token) == "token expired"
    assert cached(token) not in auth._verified


def test_the_cache_never_confuses_tokens(auth: Authenticator) -> None:
    alice, bob = hs256(claims(sub="alice")), hs256(claims(sub="bob", roles=["admin"]))
    assert auth.authenticate(alice).sub == "alice" and auth.authenticate(bob).sub == "bob"
    assert auth.authenticate(alice).roles == frozenset({"viewer"})
    # A cached token's signature on other claims, or with a byte changed, is refused.
    header, _, signature = alice.split(".")
    forged = _b64(json.dumps(claims(sub="alice", roles=["admin"])).encode())
    assert reason(auth, f"{header}.{forged}.{signature}") == "bad signature"
    assert reason(auth, alice[:-2] + ("AA" if alice[-2:] != "AA" else "BB")) == "bad signature"
    assert reason(auth, alice + " ") != ""  # not the cached string: verified, and refused


def test_refused_tokens_are_never_cached(auth: Authenticator) -> None:
    bad = hs256(claims(), secret="another-secret-of-some-length")
    for _ in range(2):
        assert reason(auth, bad) == "bad signature"
    assert cached(bad) not in auth._verified and not auth._verified


def test_the_cache_is_bounded(auth: Authenticator, monkeypatch: pytest.MonkeyPatch) -> None:
    from secstream import auth as auth_module

    monkeypatch.setattr(auth_module, "CACHE_SIZE", 3)
    tokens = [hs256(claims(sub=f"u-{n}")) for n in range(5)]
    for token in tokens:
        auth.authenticate(token)
    assert list(auth._verified) == [cached(t) for t in tokens[2:]]  # least recent went first
    long_token = hs256(claims(padding="x" * auth_module.MAX_CACHED_TOKEN))
    assert auth.authenticate(long_token).sub == "u-7" and cached(long_token) not in auth._verified
    # No entry outlives CACHE_SECONDS, whatever the token's exp.
    now = time.monotonic()
    assert all(deadline <= now + auth_module.CACHE_SECONDS
               for _, deadline, _ in auth._verified.values())
    monkeypatch.setattr(time, "monotonic", lambda: now + auth_module.CACHE_SECONDS + 1)
    assert auth.authenticate(tokens[4]).sub == "u-4"  # verified afresh, cached afresh
    assert auth._verified[cached(tokens[4])][1] > now + auth_module.CACHE_SECONDS


class _Keys:
    """A key source as an OpenID provider's (``oidc.OidcKeys``) is: its keys may change."""

    issuer = "https://idp.example"
    loaded = True

    def __init__(self, keys: list[Any]) -> None:
        self.current = keys

    def keys(self, alg: str) -> tuple[Any, ...]:
        return tuple(vk for vk in self.current if vk.alg == alg)

    async def refresh_for(self, kid: str) -> None:
        return None


def test_a_cached_token_goes_with_the_provider_key_that_signed_it(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    from secstream.auth import VerifyKey

    source = _Keys([VerifyKey("RS256", "k1", RSAKey.import_key(rsa_key.public_key()))])
    auth = Authenticator(key_source=source)
    token = rs256(claims(iss=source.issuer), rsa_key, kid="k1")
    assert auth.authenticate(token).sub == "u-7"
    assert auth.authenticate(token).sub == "u-7"  # cached, the key still there
    source.current = []  # the provider dropped the key
    with pytest.raises(AuthError, match="unknown signing key"):
        auth.authenticate(token)
    assert cached(token) not in auth._verified
