"""The pure planner: (declared, observed, owned, applied digests) -> ordered REST calls (SPEC §13.2).

Rules, each one proven in tests/unit/test_fileservice_planner.py:
- Read by name, POST only what is absent, PUT/PATCH only the fields that differ (durations compared parsed,
  quotas within DittoFS's rounding). A metadata store is never re-POSTed (a badger re-POST is a 400, not 409).
- Only objects in ``owned`` (status.provisioned) are updated or deleted. A declared object that exists but
  is not owned was made by hand: reported (``NotOwned``), never touched. Owned objects absent from the
  declaration are pruned; owned objects gone from DittoFS are re-created if declared, forgotten otherwise.
- Store type/path and a share's stores are immutable: reported (``Immutable``), no destructive call.
- Creates and updates run in dependency order (``Kind``), then deletes in reverse.
- Secrets are compared by digest against the digest last applied; a planned call carries the reference.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_args
from urllib.parse import quote

from dittoctl.api.fileservice.observed import (
    Observed,
    ObservedShare,
    duration_seconds,
    quota_matches,
    same_values,
)
from dittoctl.api.fileservice.types import (
    BOOTSTRAP_ADMIN,
    STORE_KINDS,
    Call,
    FileService,
    IdentityType,
    Kind,
    Op,
    Problem,
    ProblemKind,
    Ref,
    SecretField,
    ShareSpec,
    StoreKind,
    StoreSpec,
    digest_key,
    permission_name,
    share_name,
)
from dittoctl.api.models import REMOTE_LOCATION_KEYS
from dittoctl.api.secrets import INTEGER_STORE_KEYS, digest_of

API = "/api/v1"
_IMMUTABLE_STORE_KEYS = ("path", "db_path")
_READ_ONLY_SLOT = "read-only"
_ID_SLOT = "id"  # the DittoFS id of an owned share, as last seen: the share the operator made or adopted
_READ_ONLY_STAMP = ((_READ_ONLY_SLOT, "served"),)  # recorded once the operator made a share read-only
_ORDER = {kind: i for i, kind in enumerate(Kind)}
# Kinds recorded in status.provisioned: those the operator may prune. The operator account is its own
# identity and the adapters are seeded by DittoFS, so neither is ever deleted.
_TRACKED = frozenset(Kind) - {Kind.OPERATOR_ACCOUNT, Kind.ADAPTER, Kind.ADAPTER_SETTINGS, Kind.SHARE_NFS}


def _seg(name: str) -> str:
    return quote(name, safe="")


def share_path(name: str) -> str:
    """A share's REST path: its name is one escaped segment (DittoFS's router takes one, and decodes it)."""
    return f"{API}/shares/{_seg(share_name(name).lstrip('/'))}"


def _store_path(kind: StoreKind) -> str:
    return f"{API}/store/metadata" if kind is StoreKind.METADATA else f"{API}/store/block/{kind.value}"


DRIFT_READS = 10
"""SPEC §11: REST reads of a drift pass over an unchanged server, whatever it declares."""
_LISTS = 5  # users, adapters, metadata and local stores, shares: every pass reads them
_SETTINGS = ("nfs", "smb")
_IDENTITY: tuple[str, ...] = get_args(IdentityType)


@dataclass(frozen=True)
class Reads:
    """Which GETs a pass makes (``dittoctl.kube.dittofs.DittoFsClient.observe``) beyond the five lists every
    pass reads. ``details`` names the shares whose NFS options and grants are read (None: all); ``advance`` is
    how far a drift pass moved the round-robin."""

    groups: bool = True
    settings: tuple[str, ...] = _SETTINGS
    remote: bool = True
    policies: bool = True
    details: tuple[str, ...] | None = None
    identity: tuple[str, ...] = ()
    snapshots: tuple[str, ...] | None = None
    """The shares whose snapshots are counted (None: all): those an owned share that left the spec has, before
    anything deletes it."""
    advance: int = 0

    @property
    def gets(self) -> int | None:
        """The GETs this makes (None: one pair, and a count of snapshots, per share DittoFS has)."""
        if self.details is None or self.snapshots is None:
            return None
        return (_LISTS + self.groups + self.remote + self.policies + len(self.settings) + len(self.identity)
                + 2 * len(self.details) + len(self.snapshots or ()))

    def skipped(self) -> frozenset[str]:
        """The optional reads left out (``Observed.unread``): the planner leaves their kinds alone."""
        read = {"groups": self.groups, "remote": self.remote, "policies": self.policies,
                **{f"settings/{t}": t in self.settings for t in _SETTINGS},
                **{f"identity/{t}": t in self.identity for t in _IDENTITY}}
        return frozenset(name for name, done in read.items() if not done)


def reads(want: FileService, owned: Iterable[Ref], *, full: bool, cursor: int = 0,
          budget: int = DRIFT_READS) -> Reads:
    """The reads a pass needs (pure): what the declaration or the owned objects depend on. ``full`` (a new
    generation, a failure, a first pass): all of it. A drift pass reads the five lists and the remote stores
    (shares name them; status reports their health), and fills the rest of ``budget`` round-robin from
    ``cursor`` with the other lists and the shares' details, so every declared object is compared every few
    passes and an unchanged server costs a bounded number of reads whatever it declares."""
    owned = frozenset(owned)
    kinds = {r.kind for r in owned}
    declared = [s.key for s in want.shares if s.nfs is not None or s.permissions
                or Ref(Kind.SHARE, s.key) in owned]
    keys = {s.key for s in want.shares}
    leaving = tuple(sorted(r.name for r in owned if r.kind is Kind.SHARE and r.name not in keys))
    everything = Reads(
        groups=bool(want.groups) or Kind.GROUP in kinds,
        settings=tuple(a.type for a in want.adapters if a.settings),
        remote=any(st.kind is StoreKind.REMOTE for st in want.stores) or Kind.REMOTE_STORE in kinds,
        policies=any(s.snapshot_policy is not None for s in want.shares) or Kind.SNAPSHOT_POLICY in kinds,
        details=tuple(declared),
        identity=tuple(sorted({p.type for p in want.identity}
                              | {r.name for r in owned if r.kind is Kind.IDENTITY_PROVIDER})),
        snapshots=leaving,
    )
    if full:
        return everything
    # (field, value, GETs): each a unit of the round-robin.
    units = ([("groups", "", 1)] * everything.groups + [("policies", "", 1)] * everything.policies
             + [("settings", t, 1) for t in everything.settings] + [("identity", t, 1) for t in everything.identity]
             + [("details", n, 2) for n in declared])
    room = budget - _LISTS - everything.remote - len(leaving)
    picked: list[tuple[str, str, int]] = []
    for i in range(len(units)):
        unit = units[(cursor + i) % len(units)]
        if unit[2] > room:
            break
        picked.append(unit)
        room -= unit[2]

    def values(name: str) -> tuple[str, ...]:
        return tuple(value for field_, value, _ in picked if field_ == name)

    return Reads(groups=bool(values("groups")), settings=values("settings"), remote=everything.remote,
                 policies=bool(values("policies")), details=values("details"), identity=values("identity"),
                 snapshots=leaving, advance=len(picked))


@dataclass(frozen=True)
class Plan:
    calls: tuple[Call, ...]
    problems: tuple[Problem, ...]
    owned: frozenset[Ref]  # ownership before the calls, without refs that vanished and are not declared
    stamped: Mapping[str, str] = field(default_factory=dict)  # recorded with no call: ``share_ids``, adoption's
    # ``read_only_stamps``

    @property
    def needs_restart(self) -> bool:
        return any(c.needs_restart for c in self.calls)

    def owned_after(self, done: Iterable[Call] | None = None) -> frozenset[Ref]:
        """Ownership once ``done`` (default: every call) succeeded: what status.provisioned should say."""
        owned = set(self.owned)
        for call in self.calls if done is None else done:
            if call.op is Op.CREATE and call.kind in _TRACKED:
                owned.add(call.ref)
            elif call.op is Op.DELETE:
                owned.discard(call.ref)
                if call.kind is Kind.SHARE:  # its grants and policy went with it
                    owned -= {r for r in owned if r.kind in (Kind.PERMISSION, Kind.SNAPSHOT_POLICY)
                              and r.name.partition("#")[0] == call.name}
        return frozenset(owned)

    def digests_after(self, applied: Mapping[str, str], done: Iterable[Call] | None = None) -> dict[str, str]:
        """Digests of applied secret values once ``done`` succeeded (deleted objects drop theirs)."""
        out = {**applied, **self.stamped}
        for call in self.calls:  # absent, so any id stamped is of a share gone, whether the CREATE answered or not
            if call.op is Op.CREATE and call.kind is Kind.SHARE:
                out.pop(digest_key(call.ref, _ID_SLOT), None)  # made again: its new id is stamped when seen
        for call in self.calls if done is None else done:
            if call.op is Op.DELETE or call.whole:
                prefix = f"{call.ref}/"  # its own slots only: share:/a/b/id is not share:/a's
                for key in [k for k in out if k.startswith(prefix) and "/" not in k[len(prefix):]]:
                    del out[key]
            for sf in call.secrets:
                out[digest_key(call.ref, sf.slot)] = sf.secret.digest
            for slot, digest in call.stamps:
                out[digest_key(call.ref, slot)] = digest
        return out


@dataclass
class _Planner:
    want: FileService
    seen: Observed
    owned: frozenset[Ref]
    applied: Mapping[str, str]
    calls: list[Call] = field(default_factory=list)
    deletes: list[Call] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    # -- helpers -----------------------------------------------------------------------------------------

    def call(self, op: Op, kind: Kind, name: str, method: str, path: str, body: Mapping[str, Any] | None = None,
             **extra: Any) -> None:
        c = Call(op, kind, name, method, path, body, **extra)
        (self.deletes if op is Op.DELETE else self.calls).append(c)

    def problem(self, kind: ProblemKind, ref: Ref, message: str) -> None:
        self.problems.append(Problem(kind, ref, message))

    def mine(self, ref: Ref, present: bool) -> bool | None:
        """True: manage it. False: absent, create it. None: present but made by hand (reported)."""
        if not present:
            return False
        if ref in self.owned:
            return True
        self.problem(ProblemKind.NOT_OWNED, ref, "exists in DittoFS but was not created by the operator; "
                     "left untouched")
        return None

    def stale(self, kind: Kind, declared: set[str], present: set[str]) -> list[str]:
        """Owned names of ``kind`` that left the declaration and still exist (to prune)."""
        return sorted(r.name for r in self.owned if r.kind is kind and r.name not in declared and r.name in present)

    def read(self, unit: str) -> bool:
        """Whether this pass read ``unit`` (``Reads.skipped``): what was not read is not known to be absent."""
        return unit not in self.seen.unread

    def secret_changed(self, ref: Ref, key: str, digest: str) -> bool:
        return self.applied.get(digest_key(ref, key)) != digest

    # -- kinds -------------------------------------------------------------------------------------------

    def operator(self) -> None:
        secret = self.want.operator
        if secret is None:
            return
        name = self.want.operator_name
        if name in self.seen.users:
            return  # it logs in with this password; rotation is a re-bootstrap through admin (the lead's call)
        # The account is the client's identity, never pruned: it is not recorded in `owned`.
        self.call(Op.CREATE, Kind.OPERATOR_ACCOUNT, name, "POST", f"{API}/users",
                  {"username": name, "role": "admin"}, secrets=(SecretField("password", secret),),
                  admin_first_login=True)

    def groups(self) -> None:
        if not self.read("groups"):
            return
        declared = {g.name for g in self.want.groups}
        for g in self.want.groups:
            ref = Ref(Kind.GROUP, g.name)
            seen = self.seen.groups.get(g.name)
            state = self.mine(ref, seen is not None)
            if state is False:
                body: dict[str, Any] = {"name": g.name}
                if g.gid is not None:
                    body["gid"] = g.gid
                self.call(Op.CREATE, Kind.GROUP, g.name, "POST", f"{API}/groups", body)
            elif state and seen is not None and g.gid is not None and seen.gid != g.gid:
                self.call(Op.UPDATE, Kind.GROUP, g.name, "PUT", f"{API}/groups/{_seg(g.name)}", {"gid": g.gid})
        for name in self.stale(Kind.GROUP, declared, set(self.seen.groups)):
            self.call(Op.DELETE, Kind.GROUP, name, "DELETE", f"{API}/groups/{_seg(name)}")

    def users(self) -> None:
        reserved = {BOOTSTRAP_ADMIN, self.want.operator_name}
        declared = {u.name for u in self.want.users if u.name not in reserved}
        for u in self.want.users:
            ref = Ref(Kind.USER, u.name)
            if u.name in reserved:
                self.problem(ProblemKind.RESERVED, ref, "this account is reserved for DittoFS/the operator")
                continue
            seen = self.seen.users.get(u.name)
            state = self.mine(ref, seen is not None)
            path = f"{API}/users/{_seg(u.name)}"
            admin = u.role == "admin"
            if state is False:
                body: dict[str, Any] = {"username": u.name, "role": u.role}
                for key, value in (("uid", u.uid), ("gid", u.gid)):
                    if value is not None:
                        body[key] = value
                if u.groups:
                    body["groups"] = sorted(u.groups)
                secrets = (SecretField("password", u.password),) if u.password else ()
                # DittoFS refuses a user without a password; the planner still emits it (400 names the cause).
                self.call(Op.CREATE, Kind.USER, u.name, "POST", f"{API}/users", body, secrets=secrets,
                          admin_first_login=admin and bool(secrets))
                continue
            if not state or seen is None:
                continue
            changes: dict[str, Any] = {}
            if seen.role != u.role:
                changes["role"] = u.role
            for key, want, have in (("uid", u.uid, seen.uid), ("gid", u.gid, seen.gid)):
                if want is not None and want != have:
                    changes[key] = want
            if set(u.groups) != set(seen.groups):
                changes["groups"] = sorted(u.groups)  # PUT replaces the list
            if not seen.enabled:
                changes["enabled"] = True  # a declared user logs in; disabled by hand, it is drift
            if changes:
                self.call(Op.UPDATE, Kind.USER, u.name, "PUT", path, changes)
            if u.password and self.secret_changed(ref, "password", u.password.digest):
                # An admin reset sets must_change_password again for admin-role accounts.
                self.call(Op.SET_PASSWORD, Kind.USER, u.name, "POST", f"{path}/password", {},
                          secrets=(SecretField("new_password", u.password, label="password"),), admin_first_login=admin,
                          follows_input=True)
        for name in self.stale(Kind.USER, declared, set(self.seen.users) - reserved):
            self.call(Op.DELETE, Kind.USER, name, "DELETE", f"{API}/users/{_seg(name)}")

    def adapters(self) -> None:
        # The two adapters are seeded at first boot: declared ones are always managed, never deleted.
        updates: dict[str, dict[str, Any]] = {}
        for a in self.want.adapters:
            seen = self.seen.adapters.get(a.type)
            if seen is None:
                body: dict[str, Any] = {"type": a.type, "enabled": a.enabled}
                if a.port is not None:
                    body["port"] = a.port
                self.call(Op.CREATE, Kind.ADAPTER, a.type, "POST", f"{API}/adapters", body)
            else:
                changes: dict[str, Any] = {}
                if seen.enabled != a.enabled:
                    changes["enabled"] = a.enabled
                if a.port is not None and seen.port != a.port:
                    changes["port"] = a.port
                if changes:
                    updates[a.type] = changes
        self._move_adapters(updates)
        for a in self.want.adapters:
            path = f"{API}/adapters/{a.type}"
            if not self.read(f"settings/{a.type}"):
                continue
            have = self.seen.adapter_settings.get(a.type, {})
            diff = {k: v for k, v in a.settings if k not in have or not same_values(have[k], v)}
            if diff:
                self.call(Op.UPDATE, Kind.ADAPTER_SETTINGS, a.type, "PATCH", f"{path}/settings", diff)

    def _move_adapters(self, updates: dict[str, dict[str, Any]]) -> None:
        """The adapters' PUTs, each port freed before another adapter binds it: DittoFS answers 200 to a move
        onto a port in use and fails the bind in the background, and a later PUT of the same port changes
        nothing. A swap is broken by stopping one adapter first."""
        listening = {t: a.port for t, a in self.seen.adapters.items() if a.enabled}
        pending = dict(updates)
        stopped: set[str] = set()  # each at most once: a port held by something else must not loop forever

        def target(kind: str) -> int | None:
            """The port ``kind`` will listen on, None when it will not listen."""
            changes = pending[kind]
            on = changes.get("enabled", self.seen.adapters[kind].enabled)
            return changes.get("port", self.seen.adapters[kind].port) if on else None

        def blocked(kind: str) -> bool:
            port = target(kind)
            return port is not None and any(other != kind and held == port for other, held in listening.items())

        while pending:
            kind = next((k for k in pending if not blocked(k)), None)
            if kind is None:  # every move waits for another: stop one that holds a port another wants
                kind = next((k for k in pending if k not in stopped and k in listening
                             and any(target(o) == listening[k] for o in pending if o != k)), None)
                if kind is None:  # held by an adapter that stays: nothing to reorder, send as declared
                    kind = next(iter(pending))
                else:
                    stopped.add(kind)
                    self.call(Op.UPDATE, Kind.ADAPTER, kind, "PUT", f"{API}/adapters/{kind}", {"enabled": False})
                    listening.pop(kind, None)
                    pending[kind] = {**pending.pop(kind), "enabled": True}
                    continue
            changes = pending.pop(kind)
            self.call(Op.UPDATE, Kind.ADAPTER, kind, "PUT", f"{API}/adapters/{kind}", changes)
            if changes.get("enabled", self.seen.adapters[kind].enabled):
                listening[kind] = changes.get("port", self.seen.adapters[kind].port)
            else:
                listening.pop(kind, None)

    def identity_providers(self) -> None:
        """Identity providers are singletons the spec owns once declared (DittoFS seeds them from the rendered
        config at first boot, so "present but not created over REST" is the normal case, not a hand-made
        object). Dropped from the spec: disabled, the rest of the record kept."""
        declared = {p.type: p for p in self.want.identity}
        for p in self.want.identity:
            ref = Ref(Kind.IDENTITY_PROVIDER, p.type)
            self.owned |= {ref}
            if not self.read(f"identity/{p.type}"):
                continue
            seen = self.seen.identity.get(p.type)
            secrets = () if p.secret is None else (SecretField(p.secret_key, p.secret, within=p.within),)
            plain_differs = seen is None or not _same_record(seen, p.config, p.durations)
            secret_differs = p.secret is not None and self.secret_changed(ref, p.secret_key, p.secret.digest)
            if plain_differs or secret_differs:
                # An unchanged password is left out: DittoFS keeps the stored one when none is sent.
                self.call(Op.CREATE if seen is None else Op.UPDATE, Kind.IDENTITY_PROVIDER, p.type, "PUT",
                          f"{API}/identity-providers/{p.type}/config", dict(p.config),
                          secrets=secrets if secret_differs or seen is None else (),
                          needs_restart=p.restart and plain_differs, follows_input=secret_differs)
        for name in sorted(r.name for r in self.owned if r.kind is Kind.IDENTITY_PROVIDER):
            seen = self.seen.identity.get(name)
            if name not in declared and seen is not None and seen.get("enabled") and self.read(f"identity/{name}"):
                body = {**seen, "enabled": False}
                self.call(Op.UPDATE, Kind.IDENTITY_PROVIDER, name, "PUT",
                          f"{API}/identity-providers/{name}/config", body, needs_restart=name == "kerberos")

    def stores(self) -> tuple[set[tuple[StoreKind, str]], set[tuple[StoreKind, str]]]:
        """Plan stores; return (names usable by shares, names planned for deletion)."""
        usable: set[tuple[StoreKind, str]] = set()
        for kind in StoreKind:
            usable |= {(kind, n) for n in self.seen.stores.get(kind, {})}
        for s in self.want.stores:
            usable.add((s.kind, s.name))
            self.store(s)
        doomed: set[tuple[StoreKind, str]] = set()
        for kind in StoreKind:
            declared = {s.name for s in self.want.stores if s.kind is kind}
            for name in self.stale(STORE_KINDS[kind], declared, set(self.seen.stores.get(kind, {}))):
                doomed.add((kind, name))
        return usable - doomed, doomed

    def store(self, s: StoreSpec) -> None:
        if s.kind is StoreKind.REMOTE and not self.read("remote"):
            return
        kind = STORE_KINDS[s.kind]
        ref = Ref(kind, s.name)
        seen = self.seen.store(s.kind, s.name)
        state = self.mine(ref, seen is not None)
        secrets = tuple(SecretField(key, value, within="config", integer=key in INTEGER_STORE_KEYS)
                        for key, value in s.secrets)
        stamp = (("config", digest_of(json.dumps([s.type, dict(s.config)], sort_keys=True))),)
        if state is False:
            # The body's `config` is a dict here; the executor sends it as the JSON *string* DittoFS wants.
            self.call(Op.CREATE, kind, s.name, "POST", _store_path(s.kind),
                      {"name": s.name, "type": s.type, "config": dict(s.config)}, secrets=secrets, stamps=stamp,
                      whole=True)
            return
        if not state or seen is None:
            return
        config = dict(s.config)
        if seen.type != s.type:
            self.problem(ProblemKind.IMMUTABLE, ref, f"type is {seen.type!r} in DittoFS, declared {s.type!r}: "
                         "a store's type cannot change (declare a new store)")
            return
        for key in _IMMUTABLE_STORE_KEYS:
            if key in config and key in seen.config and str(seen.config[key]) != str(config[key]):
                self.problem(ProblemKind.IMMUTABLE, ref, f"{key} is {seen.config[key]!r} in DittoFS, declared "
                             f"{config[key]!r}: a store's {key} cannot change (declare a new store)")
                return
        for key in REMOTE_LOCATION_KEYS if s.kind is StoreKind.REMOTE else ():  # absent is "" (no prefix)
            have, want = str(seen.config.get(key) or ""), str(config.get(key) or "")
            if have != want:
                self.problem(ProblemKind.IMMUTABLE, ref, f"{key} is {have!r} in DittoFS, declared {want!r}: the "
                             f"store's blocks are under the old {key}, which DittoFS would no longer read "
                             "(declare a new store)")
                return
        plain_differs = any(k not in seen.config or not same_values(seen.config[k], v) for k, v in config.items())
        secret_differs = any(self.secret_changed(ref, sf.key, sf.secret.digest) for sf in secrets)
        # An optional key (sslmode, a remote store's endpoint) removed from its Secret: still in DittoFS's config.
        recorded_slots = {k.removeprefix(f"{ref}/") for k in self.applied if k.startswith(f"{ref}/")}
        secret_differs |= bool(recorded_slots - {"config"} - {sf.slot for sf in secrets})
        # A PUT persisted by an operator that died before recording it: DittoFS shows the new config but has
        # not applied it (that needs a restart), so the recorded stamp is what tells.
        recorded = self.applied.get(digest_key(ref, "config"))
        stamp_differs = recorded is not None and recorded != stamp[0][1]
        if plain_differs or secret_differs or stamp_differs:
            # PUT replaces the whole config, so every declared key and every secret is sent again.
            self.call(Op.UPDATE, kind, s.name, "PUT", f"{_store_path(s.kind)}/{_seg(s.name)}",
                      {"type": s.type, "config": config}, secrets=secrets, needs_restart=True, stamps=stamp,
                      whole=True, follows_input=secret_differs or stamp_differs)

    def shares(self, usable: set[tuple[StoreKind, str]]) -> set[str]:
        """Plan shares and their sub-objects; return the shares planned for deletion."""
        declared = {s.key for s in self.want.shares}
        for s in self.want.shares:
            self.share(s, usable)
        doomed = set(self.stale(Kind.SHARE, declared, set(self.seen.shares)))
        deleted = {name for name in doomed if self.seen.shares[name].snapshots == 0}
        for name in sorted(doomed):
            if name in deleted:
                self.call(Op.DELETE, Kind.SHARE, name, "DELETE", share_path(name))
            else:
                self.hold_share(name)
        return deleted

    def hold_share(self, name: str) -> None:
        """An owned share that left the spec but has snapshots (or whose snapshots were not counted): DittoFS
        would delete them with it, so it is only taken out of service (its schedule stopped, its files, grants
        and snapshots kept) until its snapshots are deleted, the share is deleted by hand, or it is declared
        again (then enabled)."""
        seen = self.seen.shares[name]
        if seen.snapshots is None:
            return  # not counted this pass: nothing is done on a guess
        if seen.enabled:
            self.call(Op.UPDATE, Kind.SHARE, name, "POST", f"{share_path(name)}/disable")
        policy = Ref(Kind.SNAPSHOT_POLICY, name)
        if self.read("policies") and policy in self.owned and name in self.seen.snapshot_policies:
            self.call(Op.DELETE, Kind.SNAPSHOT_POLICY, name, "DELETE", f"{share_path(name)}/snapshot-policy")
        self.problem(ProblemKind.HOLDS_SNAPSHOTS, Ref(Kind.SHARE, name), f"left the spec, but DittoFS would delete "
                     f"its {seen.snapshots} snapshot(s) with it: disabled (not served; files, grants and snapshots "
                     "kept) instead of deleted. Delete its snapshots, or the share, by hand to let it go, or "
                     "declare it again")

    def share(self, s: ShareSpec, usable: set[tuple[StoreKind, str]]) -> None:
        key = s.key
        ref = Ref(Kind.SHARE, key)
        seen = self.seen.shares.get(key)
        state = self.mine(ref, seen is not None)
        if state is None:
            return
        stores = ((StoreKind.METADATA, s.metadata_store), (StoreKind.LOCAL, s.local_store),
                  (StoreKind.REMOTE, s.remote_store))
        if state is False:
            missing = [f"{k.value} store {n!r}" for k, n in stores if n is not None and (k, n) not in usable]
            if missing:
                self.problem(ProblemKind.MISSING_DEPENDENCY, ref, f"{', '.join(missing)} neither declared nor "
                             "present in DittoFS")
                return
            body: dict[str, Any] = {"name": key, "metadata_store_id": s.metadata_store,
                                    "local_block_store": s.local_store, "read_only": s.read_only,
                                    "default_permission": s.default_permission}
            if s.remote_store is not None:
                body["remote_block_store"] = s.remote_store
            if s.quota_bytes:
                body["quota_bytes"] = str(s.quota_bytes)  # a string: a JSON number is a 400
            self.call(Op.CREATE, Kind.SHARE, key, "POST", f"{API}/shares", body,
                      stamps=_READ_ONLY_STAMP if s.read_only else ())
        elif seen is not None:
            moved = [f"{k.value} store is {have!r}, declared {want!r}" for (k, want), have in
                     zip(stores, (seen.metadata_store, seen.local_store, seen.remote_store), strict=True)
                     if want != have]
            if moved:
                self.problem(ProblemKind.IMMUTABLE, ref, "; ".join(moved) + ": a share's stores cannot change "
                             "(declare a new share)")
            # Made read-only by the operator, a share is refused writes for good (the webhook refuses going back;
            # without it, e.g. a namespace opted out, a PUT would report Converged while writes still fail).
            frozen = seen.read_only and not s.read_only and digest_key(ref, _READ_ONLY_SLOT) in self.applied
            if frozen:
                self.problem(ProblemKind.IMMUTABLE, ref, "served read-only, so DittoFS v0.29.0 refuses its writes "
                             "for good (restarts included): declare it readOnly: true, or declare a new share")
            changes: dict[str, Any] = {}
            if seen.read_only != s.read_only and not frozen:
                changes["read_only"] = s.read_only
            if seen.default_permission != s.default_permission:
                changes["default_permission"] = s.default_permission
            if not quota_matches(seen.quota, s.quota_bytes):
                changes["quota_bytes"] = str(s.quota_bytes or 0)  # "0" clears it
            if changes:
                # DittoFS refuses writes to a read-only share by an option it sets only when it loads the share (at
                # creation, at start): made read-only, a share is enforced from the next start, clients writing
                # until then. (That option is never cleared: the webhook refuses going back to read-write.)
                made_read_only = changes.get("read_only") is True
                self.call(Op.UPDATE, Kind.SHARE, key, "PUT", share_path(key), changes, needs_restart=made_read_only,
                          stamps=_READ_ONLY_STAMP if made_read_only else ())
            if not seen.enabled:  # a declared share is served; disabled by hand, it is drift
                self.call(Op.UPDATE, Kind.SHARE, key, "POST", f"{share_path(key)}/enable")
        self.share_nfs(s, seen)
        self.permissions(s, seen)
        self.snapshot_policy(s)

    def share_nfs(self, s: ShareSpec, seen: ObservedShare | None) -> None:
        if s.nfs is None or (seen is not None and seen.nfs is None):
            return  # nothing declared, or not read this pass (a drift pass reads a few shares at a time)
        have = seen.nfs if seen is not None else None
        diff: dict[str, Any] = {}
        for key in ("squash", "anonymous_uid", "anonymous_gid"):
            want = getattr(s.nfs, key)
            if want is not None and (have is None or getattr(have, key) != want):
                diff[key] = want
        if diff:
            self.call(Op.UPDATE, Kind.SHARE_NFS, s.key, "PATCH", f"{share_path(s.key)}/adapters/nfs/config", diff)

    def permissions(self, s: ShareSpec, seen: ObservedShare | None) -> None:
        if seen is not None and seen.permissions is None:
            return  # not read this pass
        have = (seen.permissions if seen is not None else None) or {}
        declared: set[str] = set()
        for g in s.permissions:
            name = permission_name(s.key, g.principal, g.name)
            declared.add(name)
            ref = Ref(Kind.PERMISSION, name)
            path = f"{share_path(s.key)}/permissions/{g.principal}s/{_seg(g.name)}"
            level = have.get((g.principal, g.name))
            state = self.mine(ref, level is not None)
            if state is False:
                self.call(Op.CREATE, Kind.PERMISSION, name, "PUT", path, {"level": g.level})
            elif state and level != g.level:
                self.call(Op.UPDATE, Kind.PERMISSION, name, "PUT", path, {"level": g.level})
        present = {permission_name(s.key, p, n) for p, n in have}
        for name in self.stale(Kind.PERMISSION, declared, present):
            if not name.startswith(f"{s.key}#"):
                continue
            principal, _, who = name.partition("#")[2].partition(":")
            self.call(Op.DELETE, Kind.PERMISSION, name, "DELETE",
                      f"{share_path(s.key)}/permissions/{principal}s/{_seg(who)}")

    def snapshot_policy(self, s: ShareSpec) -> None:
        if not self.read("policies"):
            return
        ref = Ref(Kind.SNAPSHOT_POLICY, s.key)
        have = self.seen.snapshot_policies.get(s.key)
        path = f"{share_path(s.key)}/snapshot-policy"
        p = s.snapshot_policy
        if p is None:
            if have is not None and ref in self.owned:
                self.call(Op.DELETE, Kind.SNAPSHOT_POLICY, s.key, "DELETE", path)
            return
        state = self.mine(ref, have is not None)
        body: dict[str, Any] = {"interval": p.interval, "keep_last": p.keep_last, "enabled": p.enabled,
                                "name_prefix": p.name_prefix}
        if p.ttl is not None:
            body["ttl"] = p.ttl
        if state is False:
            self.call(Op.CREATE, Kind.SNAPSHOT_POLICY, s.key, "PUT", path, body)
        elif state and have is not None:
            same = (duration_seconds(have.interval) == duration_seconds(p.interval)
                    and have.keep_last == p.keep_last and have.enabled == p.enabled
                    and have.name_prefix == p.name_prefix
                    and duration_seconds(have.ttl or "0") == duration_seconds(p.ttl or "0"))
            if not same:
                self.call(Op.UPDATE, Kind.SNAPSHOT_POLICY, s.key, "PUT", path, body)

    def prune_stores(self, doomed: set[tuple[StoreKind, str]], dropped_shares: set[str]) -> None:
        kept = [sh for name, sh in self.seen.shares.items() if name not in dropped_shares]
        for kind, name in sorted(doomed):
            ref = Ref(STORE_KINDS[kind], name)
            users = sorted(sh.name for sh in kept if (sh.metadata_store, sh.local_store, sh.remote_store)
                           [list(StoreKind).index(kind)] == name)
            if users:
                self.problem(ProblemKind.IN_USE, ref, f"left the spec but shares still use it: {', '.join(users)}")
                continue
            # DittoFS keeps a deleted badger store open (its directory lock) until it restarts: roll the pod so
            # the path can be used again (its files stay).
            seen = self.seen.store(kind, name)
            badger = kind is StoreKind.METADATA and seen is not None and seen.type == "badger"
            self.call(Op.DELETE, STORE_KINDS[kind], name, "DELETE", f"{_store_path(kind)}/{_seg(name)}",
                      needs_restart=badger)

    def forget_dropped_children(self, dropped_shares: set[str]) -> None:
        """Sub-objects of a share being deleted go with it: no separate DELETE."""
        self.deletes = [c for c in self.deletes if not (
            c.kind in (Kind.PERMISSION, Kind.SNAPSHOT_POLICY, Kind.SHARE_NFS)
            and c.name.partition("#")[0] in dropped_shares)]

    def run(self) -> Plan:
        self.operator()
        self.groups()
        self.users()
        self.identity_providers()
        self.adapters()
        usable, doomed_stores = self.stores()
        dropped = self.shares(usable)
        self.forget_dropped_children(dropped)
        self.prune_stores(doomed_stores, dropped)
        creates = sorted(self.calls, key=lambda c: _ORDER[c.kind])  # stable: keeps per-kind order
        deletes = sorted(self.deletes, key=lambda c: -_ORDER[c.kind])
        owned = self.live_owned()
        return Plan(tuple(creates + deletes), tuple(self.problems), owned, share_ids(owned, self.seen))

    def live_owned(self) -> frozenset[Ref]:
        """Drop refs of objects that vanished from DittoFS and are no longer declared."""
        declared_shares = {s.key for s in self.want.shares}
        keep: set[Ref] = set()
        for ref in self.owned:
            unit = _UNITS.get(ref.kind)
            if unit is not None and not self.read(unit.format(ref.name)):
                alive = True  # not read this pass: ownership is never dropped on a guess
            elif ref.kind is Kind.SHARE:
                alive = ref.name in self.seen.shares or ref.name in declared_shares
            elif ref.kind is Kind.GROUP:
                alive = ref.name in self.seen.groups or any(g.name == ref.name for g in self.want.groups)
            elif ref.kind is Kind.USER:
                alive = ref.name in self.seen.users or any(u.name == ref.name for u in self.want.users)
            elif ref.kind in (Kind.METADATA_STORE, Kind.LOCAL_STORE, Kind.REMOTE_STORE):
                kind = next(k for k, v in STORE_KINDS.items() if v is ref.kind)
                alive = self.seen.store(kind, ref.name) is not None or any(
                    s.kind is kind and s.name == ref.name for s in self.want.stores)
            elif ref.kind is Kind.PERMISSION:
                # Deleting a user or group (by hand too) takes its grants with it (proven on v0.29.0).
                share, _, rest = ref.name.partition("#")
                principal, _, who = rest.partition(":")
                seen_share = self.seen.shares.get(share)
                grants = seen_share.permissions if seen_share is not None else {}
                # Grants not read this pass (None) are assumed alive: ownership is never dropped on a guess.
                alive = grants is None or (principal, who) in grants or any(
                    permission_name(s.key, g.principal, g.name) == ref.name for s in self.want.shares
                    for g in s.permissions)
            elif ref.kind is Kind.IDENTITY_PROVIDER:
                # Kept while declared, or until it is seen disabled (a later hand-made one is not ours).
                alive = any(p.type == ref.name for p in self.want.identity) or bool(
                    (self.seen.identity.get(ref.name) or {}).get("enabled"))
            else:
                alive = ref.name in self.seen.snapshot_policies or any(
                    s.key == ref.name and s.snapshot_policy is not None for s in self.want.shares)
            if alive:
                keep.add(ref)
        return frozenset(keep)


# The optional read (``Reads.skipped``) that shows objects of a kind.
_UNITS = {Kind.GROUP: "groups", Kind.REMOTE_STORE: "remote", Kind.SNAPSHOT_POLICY: "policies",
          Kind.IDENTITY_PROVIDER: "identity/{}"}


def _same_record(seen: Mapping[str, Any], want: Mapping[str, Any], durations: frozenset[str]) -> bool:
    """Every declared key equal in ``seen`` (sub-records compared the same way; redacted passwords and keys
    DittoFS adds are not declared, so not compared)."""
    for key, value in want.items():
        have = seen.get(key)
        if have is None and not value:
            continue  # DittoFS omits empty fields (omitempty)
        if isinstance(value, Mapping):
            # A sub-record DittoFS omits is one whose fields are all empty: a declared "off" matches it.
            if not isinstance(have, Mapping | None) or not _same_record(have or {}, value, durations):
                return False
        elif key in durations:
            if not isinstance(have, str) or duration_seconds(have) != duration_seconds(str(value)):
                return False
        elif not same_values(have, value):
            return False
    return True


def read_only_stamps(refs: Iterable[Ref], seen: Observed) -> dict[str, str]:
    """The read-only stamps of the shares in ``refs`` that DittoFS serves read-only. Found so when adopted, a
    share is one DittoFS loaded read-only (created so, or started since it was made so), whose writes v0.29.0
    refuses for good: stamped as if the operator had made it read-only, it is never put back and reported
    writable while its writes still fail."""
    return {digest_key(r, _READ_ONLY_SLOT): _READ_ONLY_STAMP[0][1] for r in refs
            if r.kind is Kind.SHARE and (share := seen.shares.get(r.name)) is not None and share.read_only}


def share_ids(refs: Iterable[Ref], seen: Observed) -> dict[str, str]:
    """The ids DittoFS gives the shares in ``refs`` it holds, as the plan stamps them."""
    return {digest_key(r, _ID_SLOT): share.id for r in refs
            if r.kind is Kind.SHARE and (share := seen.shares.get(r.name)) is not None and share.id}


def _share_of(ref: Ref) -> str | None:
    """The share ``ref`` is, or belongs to (a grant, a snapshot policy, NFS options)."""
    if ref.kind in (Kind.SHARE, Kind.SNAPSHOT_POLICY, Kind.SHARE_NFS):
        return ref.name
    return ref.name.partition("#")[0] if ref.kind is Kind.PERMISSION else None


def _not_remade(owned: Iterable[Ref], seen: Observed, applied: Mapping[str, str]) -> frozenset[Ref]:
    """``owned`` without the shares (and their sub-objects) DittoFS holds under another id than the one stamped:
    deleted and made again by hand between two passes (as the message about a share holding snapshots invites),
    such a share is not the operator's, and must not be deleted or brought to the declaration."""
    owned = frozenset(owned)
    stamped = {r.name: rec for r in owned if r.kind is Kind.SHARE and (rec := applied.get(digest_key(r, _ID_SLOT)))}
    remade = {name for name, rec in stamped.items() if (share := seen.shares.get(name)) is not None
              and share.id and share.id != rec}
    return frozenset(r for r in owned if _share_of(r) not in remade) if remade else owned


def plan(
    want: FileService,
    seen: Observed,
    owned: Iterable[Ref] = (),
    applied: Mapping[str, str] | None = None,
) -> Plan:
    """The ordered calls that make ``seen`` serve ``want``, touching only ``owned`` objects (pure)."""
    applied = applied or {}
    return _Planner(want, seen, _not_remade(owned, seen, applied), applied).run()


def store_body_json(body: Mapping[str, Any]) -> dict[str, Any]:
    """The wire form of a store body: ``config`` as a JSON string (an object is a 400 on v0.29.0)."""
    out = dict(body)
    if isinstance(out.get("config"), dict):
        out["config"] = json.dumps(out["config"], sort_keys=True)
    return out

