"""Optional API keys per organisation.

With no keys configured the service is open. With keys configured:
/feedback and /admin/* need a valid key; /route, /route_batch and /v1/* take
one optionally (or need one with `require_key_for_routing`); a valid key binds
the request to its organisation, and a request naming another org is refused.
A key entry with `admin: true` is an admin key: only admin keys open
the analytics dashboard's data (all orgs). Keys are held only as sha256 digests."""
from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

PROTECTED_PREFIXES = ("/feedback", "/admin")
ROUTING_PREFIXES = ("/route", "/route_batch", "/v1/")


class AuthError(Exception):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class KeyRing:
    digests: dict[str, str]          # sha256 -> org
    header: str = "x-api-key"
    require_for_routing: bool = False
    admins: frozenset[str] = frozenset()   # digests of admin keys

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None) -> "KeyRing":
        cfg = dict(cfg or {})
        environ = os.environ if environ is None else environ
        digests: dict[str, str] = {}
        admins: set[str] = set()
        for i, entry in enumerate(cfg.get("keys") or []):
            entry = dict(entry)
            org = entry.get("org")
            if not org:
                raise ValueError(f"serving.auth.keys[{i}] has no org")
            if entry.get("sha256"):
                digest = str(entry["sha256"]).lower()
            elif entry.get("env"):
                value = environ.get(str(entry["env"]))
                if not value:
                    raise ValueError(f"serving.auth.keys[{i}]: environment variable {entry['env']} "
                                     f"(key of org {org!r}) is not set")
                digest = _digest(value)
            elif entry.get("key"):  # plain keys only for tests and local use
                digest = _digest(str(entry["key"]))
            else:
                raise ValueError(f"serving.auth.keys[{i}] needs env or sha256")
            digests[digest] = str(org)
            if entry.get("admin"):
                admins.add(digest)
        return cls(digests, str(cfg.get("header", "x-api-key")).lower(),
                   bool(cfg.get("require_key_for_routing", False)), frozenset(admins))

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def presented_key(self, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        want = self.header.encode("latin-1")
        bearer = None
        for name, value in headers:
            name = name.lower()
            if name == want:
                return value.decode("latin-1").strip()
            if name == b"authorization":
                v = value.decode("latin-1").strip()
                if v.lower().startswith("bearer "):
                    bearer = v[7:].strip()
        return bearer

    def org_of(self, key: str) -> str | None:
        digest = _digest(key)
        for known, org in self.digests.items():
            if hmac.compare_digest(known, digest):
                return org
        return None

    def check(self, path: str, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """The org the request is bound to (None = unauthenticated); AuthError otherwise."""
        if not self.enabled:
            return None
        protected = path.startswith(PROTECTED_PREFIXES)
        routing = path.startswith(ROUTING_PREFIXES)
        if not (protected or routing):
            return None
        key = self.presented_key(headers)
        if not key:
            if protected or self.require_for_routing:
                raise AuthError(f"{path} needs an API key: send it in the {self.header} header "
                                "or as Authorization: Bearer <key>", 401)
            return None
        org = self.org_of(key)
        if org is None:
            raise AuthError("the API key is not valid", 401)
        return org


    def check_admin(self, headers: Iterable[tuple[bytes, bytes]], what: str = "the dashboard") -> None:
        """Nothing when keys are off or an admin key is presented; AuthError (401/403) otherwise."""
        if not self.enabled:
            return
        key = self.presented_key(headers)
        if not key:
            raise AuthError(f"{what} needs an admin API key: send it in the {self.header} header "
                            "or as Authorization: Bearer <key>", 401)
        if self.org_of(key) is None:
            raise AuthError("the API key is not valid", 401)
        if not any(hmac.compare_digest(a, _digest(key)) for a in self.admins):
            raise AuthError(f"{what} needs an admin key; this key belongs to an org without admin rights", 403)


def bind_org(obj: Any, org: str, where: str) -> None:
    """Set or check the org of a parsed request body in place (AuthError 403 on a mismatch)."""
    if not isinstance(obj, dict):
        return
    have = obj.get("org_id")
    if have is not None and have != org:
        raise AuthError(f"{where}: the API key belongs to org {org!r}, the request names org {have!r}", 403)
    obj["org_id"] = org
