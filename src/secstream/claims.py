"""Roles and groups out of a token's claims: dotted claim paths and the role map.

Providers put roles in claims of their own (Keycloak ``realm_access.roles``, Entra ID
``roles``, Auth0 a namespaced ``https://example.com/roles``): ``SECSTREAM_ROLES_CLAIM``
and ``SECSTREAM_GROUPS_CLAIM`` say where, and ``SECSTREAM_ROLE_MAP`` renames a
provider's roles to secstream's before the role table applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from secstream.errors import AuthError

_MISSING = object()


def lookup(claims: Mapping[str, Any], path: str) -> object:
    """The value at ``path``: a claim of that exact name first (names may hold dots,
    like Auth0's URLs), else ``a.b.c`` through nested objects, the longest claim name
    that matches first. ``_MISSING`` when absent."""
    if path in claims:
        return claims[path]
    cut = len(path)
    while (cut := path.rfind(".", 0, cut)) > 0:
        head = path[:cut]
        if head in claims:
            inner = claims[head]
            if not isinstance(inner, Mapping):
                raise AuthError(f"invalid claim: {head}")
            return lookup(inner, path[cut + 1 :])
    return _MISSING


def strings(claims: Mapping[str, Any], path: str) -> frozenset[str]:
    """A list of strings (or one string) at ``path``; absent: none. Anything else: 401."""
    value = lookup(claims, path)
    if value is _MISSING:
        return frozenset()
    if isinstance(value, str):
        return shared(frozenset((value,)))
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AuthError(f"invalid claim: {path}")
    return shared(frozenset(value))


MAX_SHARED = 1024
"""Distinct sets ``shared`` keeps; past it, a new set is returned as it is."""
_shared: dict[frozenset[str], frozenset[str]] = {}


def shared(value: frozenset[str]) -> frozenset[str]:
    """One object for equal sets: every connection's principal holds its roles (a
    one-role set is 216 bytes), and most connections have one of a few role sets."""
    found = _shared.get(value)
    if found is not None:
        return found
    if len(_shared) < MAX_SHARED:
        _shared[value] = value
    return value


def place(claims: dict[str, Any], path: str, value: object) -> None:
    """Put ``value`` where ``lookup(claims, path)`` finds it (nested at the dots)."""
    *parents, name = path.split(".")
    for parent in parents:
        inner = claims.setdefault(parent, {})
        if not isinstance(inner, dict):
            raise ValueError(f"claim {parent!r} is not an object")
        claims = inner
    claims[name] = value


class RoleMap:
    """``provider-role -> secstream roles``; roles not in the map pass through as they are."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._map: dict[str, frozenset[str]] = {}
        for provider_role, role in pairs:
            self._map[provider_role] = self._map.get(provider_role, frozenset()) | {role}

    def apply(self, roles: frozenset[str]) -> frozenset[str]:
        if not self._map:
            return roles
        mapped: set[str] = set()
        for role in roles:
            mapped |= self._map.get(role, {role})
        return shared(frozenset(mapped))
