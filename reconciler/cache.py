"""In-memory views fed by the watch streams (kopf's for DittoServers, reconciler.watch for the rest).

They are hints, not truth: a miss falls back to a point GET, and every write's response is stored
back, so a cold start or a lagging watch costs reads, never duplicate writes. Secrets are reduced to
per-key digests on arrival, and only for Secrets some DittoServer references; bodies are never kept.
DittoServers, children and pods are kept as compact JSON and decoded per read (orjson: ~10 us for a DittoServer): a
decoded StatefulSet is ~35 KiB of dicts, its JSON ~6 KiB, and a pass reads each object once or twice.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from dittoctl.api.kinds import DITTOSERVERS, SECRETS, Kind
from dittoctl.api.naming import HASH_ANNOTATION, INSTANCE_LABEL
from dittoctl.api.secrets import digest_of
from reconciler.status import CRASH_LOOP, PULL_FAILING

Key = tuple[str, str]  # (namespace, name)
Obj = dict[str, Any]
# key -> digest of its value; None means the Secret does not exist.
SecretDigest = dict[str, str] | None


def secret_digest(secret: Mapping[str, Any]) -> dict[str, str]:
    digests = {}
    for key, value in (secret.get("data") or {}).items():
        digests[key] = digest_of(base64.b64decode(value or ""))
    for key, value in (secret.get("stringData") or {}).items():
        digests[key] = digest_of(str(value).encode())
    return digests


def slim(obj: Mapping[str, Any]) -> Obj:
    """The object without `managedFields` (often half its size; never read here)."""
    meta = obj.get("metadata") or {}
    if "managedFields" not in meta:
        return dict(obj)
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def slim_pod(pod: Mapping[str, Any]) -> Obj:
    """Only what status, provisioning and deletion read from a pod: identity, labels, the config hash it runs,
    phase, IP, whether it is Ready, and its containers' states as ``reconciler.status`` reads them. Two versions
    that differ elsewhere (timestamps, restart counts, image IDs, its node) look the same, so their events wake
    no pass."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    slim: Obj = {k: status[k] for k in ("phase", "podIP") if k in status}
    slim["conditions"] = [{"type": "Ready", "status": c.get("status")}
                          for c in status.get("conditions") or () if c.get("type") == "Ready"]
    for key in ("initContainerStatuses", "containerStatuses"):
        if key in status:
            slim[key] = [_container(cs) for cs in status[key] or ()]
    kept = {k: meta[k] for k in ("name", "namespace", "labels", "uid", "deletionTimestamp") if k in meta}
    config = (meta.get("annotations") or {}).get(HASH_ANNOTATION)
    if config is not None:
        kept["annotations"] = {HASH_ANNOTATION: config}
    return {"metadata": kept, "status": slim}


def _container(container: Mapping[str, Any]) -> Obj:
    """Its state as the status reads it: waiting (and why: the image of a failing pull, the last exit code of a
    crash loop), or running, and whether it passed its startup probe."""
    out: Obj = {"name": container.get("name")}
    state = container.get("state") or {}
    reason = (state.get("waiting") or {}).get("reason")
    if reason is not None:
        out["state"] = {"waiting": {"reason": reason}}
        if reason in PULL_FAILING:
            out["image"] = container.get("image")
        elif reason == CRASH_LOOP:
            code = ((container.get("lastState") or {}).get("terminated") or {}).get("exitCode")
            if code is not None:
                out["lastState"] = {"terminated": {"exitCode": code}}
    elif "running" in state:
        out["state"] = {"running": {}}
    if "started" in container:
        out["started"] = container["started"]
    return out


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata", {})
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def version_of(obj: Mapping[str, Any] | None) -> str | None:
    version = None if obj is None else (obj.get("metadata") or {}).get("resourceVersion")
    return None if version is None else str(version)


@dataclass(frozen=True, slots=True)
class Packed:
    """A cached object: its resourceVersion (to recognise an echo without decoding) and its compact JSON."""

    version: str | None
    raw: bytes

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Packed:
        # Copied to an exact-size object: orjson grows its output by realloc and shrinks it in place, and each
        # long-lived shrunk buffer pins the freed tail beside it (3x the live size in RSS after a trim).
        return cls(version_of(obj), memoryview(orjson.dumps(slim(obj))).tobytes())

    def unpack(self) -> Obj:
        """A fresh copy each time (callers may keep or change it)."""
        return dict(orjson.loads(self.raw))


@dataclass(eq=False, slots=True)
class Read:
    """A GET in flight (of a child or a Secret). `spoke` turns True when the watch delivers that object meanwhile:
    the answer may then predate the watch's word, which stands (events of one object come in order, and the watch
    delivers any later one)."""

    key: tuple[str, str, str]
    spoke: bool = False


@dataclass
class Cache:
    servers: dict[Key, Packed] = field(default_factory=dict)
    # (plural, namespace, name) -> object
    children: dict[tuple[str, str, str], Packed] = field(default_factory=dict)
    # children and DittoServers a pass is writing -> the watch events (type, object) delivered meanwhile
    writing: dict[tuple[str, str, str], list[tuple[str | None, Obj]]] = field(default_factory=dict)
    # children and Secrets being read with a GET -> those reads (Secrets are shared: two passes may read one)
    reading: dict[tuple[str, str, str], list[Read]] = field(default_factory=dict)
    # (namespace, instance) -> pod name -> the fields of it we read (`slim_pod`)
    pods: dict[Key, dict[str, Packed]] = field(default_factory=lambda: defaultdict(dict))
    secrets: dict[Key, SecretDigest] = field(default_factory=dict)
    # referenced Secret -> the resourceVersion its digest was last delivered at (``secret_event``)
    secret_versions: dict[Key, str | None] = field(default_factory=dict)
    # (namespace, secret name) -> DittoServer names referencing it
    secret_refs: dict[Key, set[str]] = field(default_factory=lambda: defaultdict(set))
    # DittoServer -> the Secret names it references (to undo the index)
    server_refs: dict[Key, set[str]] = field(default_factory=dict)

    # -- DittoServers ----------------------------------------------------------------------------------
    def put_server(self, obj: Mapping[str, Any]) -> None:
        self.servers[key_of(obj)] = Packed.of(obj)

    def server(self, key: Key) -> Obj | None:
        packed = self.servers.get(key)
        return None if packed is None else packed.unpack()

    def server_version(self, key: Key) -> str | None:
        packed = self.servers.get(key)
        return None if packed is None else packed.version

    def all_servers(self) -> Iterator[Obj]:
        return (packed.unpack() for packed in list(self.servers.values()))

    def drop_server(self, key: Key) -> None:
        self.servers.pop(key, None)
        self.set_refs(key, ())

    def set_refs(self, server: Key, secrets: Iterable[str]) -> None:
        namespace, name = server
        new = set(secrets)
        old = self.server_refs.get(server, set())
        for secret in old - new:
            holders = self.secret_refs.get((namespace, secret))
            if holders is not None:
                holders.discard(name)
                if not holders:
                    del self.secret_refs[(namespace, secret)]
                    self.secrets.pop((namespace, secret), None)
                    self.secret_versions.pop((namespace, secret), None)
        for secret in new - old:
            self.secret_refs[(namespace, secret)].add(name)
        if new:
            self.server_refs[server] = new
        else:
            self.server_refs.pop(server, None)

    # -- children ----------------------------------------------------------------------------------------
    def put_child(self, kind: Kind, obj: Obj) -> None:
        namespace, name = key_of(obj)
        self.children[(kind.plural, namespace, name)] = Packed.of(obj)

    # -- GETs racing the watch ----------------------------------------------------------------------------
    @contextmanager
    def read(self, kind: Kind, namespace: str, name: str) -> Iterator[Read]:
        """Marks a GET in flight; settle its answer with `child_answer` or `secret_answer` inside the block."""
        read = Read((kind.plural, namespace, name))
        self.reading.setdefault(read.key, []).append(read)
        try:
            yield read
        finally:
            reads = self.reading[read.key]
            reads.remove(read)
            if not reads:
                del self.reading[read.key]

    def saw(self, kind: Kind, obj: Mapping[str, Any]) -> None:
        """A watch event: every GET of that object in flight may answer older news."""
        for read in self.reading.get((kind.plural, *key_of(obj)), ()):
            read.spoke = True

    def child_answer(self, read: Read, answer: Obj | None) -> Obj | None:
        """A child's GET answer, cached unless the watch spoke meanwhile, e.g. a StatefulSet read while the garbage
        collector finished deleting it, whose DELETED came first: put back, it would never leave the cache."""
        if read.spoke:
            packed = self.children.get(read.key)
            return None if packed is None else packed.unpack()
        if answer is not None:
            self.children[read.key] = Packed.of(answer)
        return answer

    def secret_answer(self, read: Read, digest: SecretDigest) -> SecretDigest:
        """A Secret's GET answer (as its digest), cached unless the watch spoke meanwhile (a rotation whose event
        came first would otherwise be forgotten until the next one)."""
        key = (read.key[1], read.key[2])
        if not read.spoke:
            self.put_secret(key, digest)
        return self.secrets.get(key, digest)

    def begin_write(self, kind: Kind, namespace: str, name: str) -> None:
        self.writing[(kind.plural, namespace, name)] = []

    def during_write(self, kind: Kind, event_type: str | None, obj: Obj) -> bool:
        """Holds back a watch event for an object being written (its handler then skips it); False when none is."""
        events = self.writing.get((kind.plural, *key_of(obj)))
        if events is None:
            return False
        events.append((event_type, obj))
        return True

    def end_write(self, kind: Kind, namespace: str, name: str, result: Obj | None) -> bool:
        """Stores the newest known version after a write (``result`` is its response; None: it failed). True when
        the watch delivered anything but the write's own echo meanwhile: the server needs another pass.

        One object's watch events come in order: those after the echo are newer than the response, the others
        older, and the newest decides. A deleted and re-created object (a server deleted before its finalizer
        went on, and applied again) is the new one: dropped, it would never be reconciled again."""
        events = self.writing.pop((kind.plural, namespace, name), [])
        version = version_of(result)
        echo = next((i for i, (event_type, obj) in enumerate(events)
                     if version is not None and event_type != "DELETED" and version_of(obj) == version), None)
        if echo is not None:
            after = events[echo + 1:]
        else:  # the echo is still to come (all were older), or the write failed (all are real)
            after = [] if result is not None else events
        if after:
            if after[-1][0] == "DELETED":
                self._drop(kind, (namespace, name))
            else:
                self._put(kind, after[-1][1])
        elif result is not None:
            deleted = echo is None and any(event_type == "DELETED" for event_type, _ in events)
            if deleted and kind.plural != DITTOSERVERS.plural:
                self._drop(kind, (namespace, name))  # which came last is unknown: the next read asks the apiserver
            else:
                self._put(kind, result)  # a server that is gone after all is forgotten by the drift pass
        return len(events) > (echo is not None)

    def _put(self, kind: Kind, obj: Obj) -> None:
        if kind.plural == DITTOSERVERS.plural:
            self.put_server(obj)
        else:
            self.put_child(kind, obj)

    def _drop(self, kind: Kind, key: Key) -> None:
        if kind.plural == DITTOSERVERS.plural:
            self.drop_server(key)
        else:
            self.drop_child(kind, key)

    def drop_child(self, kind: Kind, key: Key) -> None:
        self.children.pop((kind.plural, *key), None)

    def drop_kind(self, kind: Kind) -> None:
        """Forgets every child of a kind (its API went away)."""
        for key in [k for k in self.children if k[0] == kind.plural]:
            del self.children[key]

    def child(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        packed = self.packed_child(kind, namespace, name)
        return None if packed is None else packed.unpack()

    def packed_child(self, kind: Kind, namespace: str, name: str) -> Packed | None:
        """The cached version itself (its identity changes with every new version)."""
        return self.children.get((kind.plural, namespace, name))

    def child_version(self, kind: Kind, namespace: str, name: str) -> str | None:
        packed = self.packed_child(kind, namespace, name)
        return None if packed is None else packed.version

    def put_pod(self, obj: Obj) -> bool:
        """Records a pod of a server; False when nothing we read from it changed (or it belongs to none)."""
        namespace, name = key_of(obj)
        instance = obj.get("metadata", {}).get("labels", {}).get(INSTANCE_LABEL)
        if not instance:
            return False
        pods = self.pods[(namespace, instance)]
        packed, cached = Packed.of(slim_pod(obj)), pods.get(name)
        pods[name] = packed
        return cached is None or cached.raw != packed.raw

    def drop_pod(self, obj: Mapping[str, Any]) -> None:
        namespace, name = key_of(obj)
        instance = obj.get("metadata", {}).get("labels", {}).get(INSTANCE_LABEL)
        pods = self.pods.get((namespace, str(instance)))
        if pods is not None:
            pods.pop(name, None)
            if not pods:
                del self.pods[(namespace, str(instance))]

    def pods_of(self, namespace: str, instance: str) -> list[Obj]:
        return [packed.unpack() for packed in self.pods.get((namespace, instance), {}).values()]

    # -- Secrets -----------------------------------------------------------------------------------------
    def secret_event(self, obj: Mapping[str, Any], deleted: bool) -> set[str]:
        """Record a watched Secret if referenced; returns the DittoServers to re-reconcile: none when the cache
        already held these very digests (a Secret a pass just generated, coming back on the watch)."""
        key = key_of(obj)
        holders = self.secret_refs.get(key)
        if not holders:
            return set()
        # A label edit moves a Secret between the two Secret streams (managed by us, or not): one says DELETED,
        # the other ADDED, at the same resourceVersion and in either order. Not a deletion.
        version = version_of(obj)
        if deleted and version is not None and self.secret_versions.get(key) == version:
            return set()
        self.secret_versions[key] = version
        digest = None if deleted else secret_digest(obj)
        if key in self.secrets and self.secrets[key] == digest:
            return set()
        self.secrets[key] = digest
        return set(holders)

    def forget_secrets(self) -> None:
        """The Secret watch may have missed events: every digest is unknown again, and a GET in flight may answer
        from before the miss, so its answer is not cached either."""
        self.secrets.clear()
        self.secret_versions.clear()
        for (plural, _, _), reads in self.reading.items():
            if plural == SECRETS.plural:
                for read in reads:
                    read.spoke = True

    def put_secret(self, key: Key, digest: SecretDigest) -> None:
        if key in self.secret_refs:
            self.secrets[key] = digest
