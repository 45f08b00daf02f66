"""The declared file service of a DittoServer (SPEC §13.1), pure: spec -> ``FileService`` for the planner,
and the share addresses shown in status."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dittoctl.api.fileservice import (
    FileService,
    Grant,
    GroupSpec,
    SecretValue,
    ShareSpec,
    StoreKind,
    StoreSpec,
    UserSpec,
)
from dittoctl.api.models import DittoServerSpec

METADATA_PATH = "/data/store/metadata/badger"
BLOCK_PATH = "/data/store/block/blocks"
DEFAULT_STORES = (
    StoreSpec(StoreKind.METADATA, "default", "badger", (("path", METADATA_PATH),)),
    StoreSpec(StoreKind.LOCAL, "default", "fs", (("path", BLOCK_PATH),)),
)
# (secret, key) -> digest of the value (the cache's), None when the Secret or key is missing.
DigestOf = Callable[[str, str], str | None]


def secret_ref(secret: str, key: str) -> str:
    return f"{secret}/{key}"


def salted(salt: str, digest: str) -> str:
    """What status records for an applied secret: keyed by the operator's own password, so a digest in
    status cannot be matched against guessed passwords."""
    return hmac.new(salt.encode(), digest.encode(), hashlib.sha256).hexdigest()[:32]


def declared(spec: DittoServerSpec, digest_of: DigestOf, salt: str) -> tuple[FileService, list[str]]:
    """(the declared file service, missing Secret keys as messages). Users whose password is missing are
    left out (and named), so nothing is created without its password."""
    missing: list[str] = []
    users: list[UserSpec] = []
    for u in spec.users:
        ref = u.password_secret_ref
        digest = digest_of(ref.name, ref.key)
        if digest is None:
            missing.append(f"Secret {ref.name} key {ref.key} (password of user {u.name})")
            continue
        users.append(UserSpec(u.name, SecretValue(secret_ref(ref.name, ref.key), salted(salt, digest)),
                              groups=tuple(u.groups)))
    shares = tuple(
        ShareSpec(s.name, read_only=s.read_only, default_permission=s.default_permission,
                  permissions=tuple(Grant("user" if p.user else "group", p.user or p.group or "", p.level)
                                    for p in s.permissions))
        for s in spec.effective_shares)
    return FileService(stores=DEFAULT_STORES if shares else (), shares=shares, users=tuple(users),
                       groups=tuple(GroupSpec(g.name) for g in spec.groups)), missing


def share_status(spec: DittoServerSpec, host: str, present: Sequence[str]) -> list[dict[str, Any]]:
    """Declared shares that exist in DittoFS, with ready-to-paste addresses on ``host``."""
    out = []
    nfs, smb = spec.adapters.nfs, spec.adapters.smb
    for s in spec.effective_shares:
        if s.name not in present:
            continue
        entry: dict[str, Any] = {"name": s.name, "readOnly": s.read_only}
        if nfs.enabled:
            entry["nfs"] = f"nfs://{host}:{nfs.port}{s.name}"
        if smb.enabled:
            entry["smb"] = f"smb://{host}:{smb.port}{s.name}"
        out.append(entry)
    return out


def owned_state(raw: Mapping[str, Any] | None) -> tuple[list[str], dict[str, str]]:
    """(refs, applied digests) from the JSON kept in the operator Secret / status."""
    raw = raw or {}
    refs = [str(r) for r in raw.get("refs") or []]
    applied = {str(k): str(v) for k, v in (raw.get("applied") or {}).items()}
    return refs, applied
