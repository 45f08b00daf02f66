"""The async source of cluster facts for validation (the snapshot type, pure, is dittoctl.api.facts).

Lookups are cheap and bounded (SPEC §7): StorageClass names come from a cache kept fresh by a periodic
relist plus a point GET on a miss, Percona presence from cached discovery, Secrets from point GETs with a
2 s timeout. Only Secret key names and their values' lengths are kept, never values, and there is no
cluster-wide Secret cache.
Every failure turns into "unknown", which the rules report as a "could not verify" warning.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from dittoctl.api.facts import ClusterFacts
from dittoctl.api.kinds import PERCONAPGCLUSTERS, SECRETS, STORAGECLASSES
from dittoctl.api.parsed import ParsedSpec, references
from dittoctl.api.secrets import value_length
from dittoctl.kube.background import Background
from dittoctl.kube.gateway import ApiError, Conflict, Gateway, NotFound
from dittoctl.kube.logs import fields

log = logging.getLogger("dittofs.webhook.facts")
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
T = TypeVar("T")

_LOOKUP_ERRORS = (ApiError, Conflict, NotFound, OSError, TimeoutError, ValueError, TypeError, KeyError)


class FactSource:
    """Looks up exactly what an object references. Call `start()` to keep the StorageClass cache warm;
    without it (e.g. `dittoctl validate --cluster`) every lookup is done on demand."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        timeout: float = 2.0,
        resync_seconds: float = 60.0,
        negative_ttl: float = 3.0,
        positive_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway = gateway
        self.timeout = timeout
        self.resync_seconds = resync_seconds
        self.negative_ttl = negative_ttl
        self.positive_ttl = positive_ttl
        self._clock = clock
        self._classes: frozenset[str] | None = None
        # class -> (allowVolumeExpansion, when read), from the list and point GETs
        self._expandable: dict[str, tuple[bool, float]] = {}
        self._default_class: str | None = None
        self._classes_missing: dict[str, float] = {}  # name -> when a GET last said 404
        self._percona: bool | None = None
        self._percona_at = float("-inf")
        self._percona_lock = asyncio.Lock()
        self._classes_lock = asyncio.Lock()
        self._loop = Background("webhook-storageclass-resync", self._resync_loop)

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _resync_loop(self) -> None:
        # A relist rather than a watch: clusters have a handful of StorageClasses, one LIST a minute costs
        # less than keeping a watch stream healthy, and a new class is caught at once by the GET on a miss.
        while True:
            ok = await self.refresh_storage_classes()
            await asyncio.sleep(self.resync_seconds if ok else min(5.0, self.resync_seconds))

    async def refresh_storage_classes(self, timeout: float | None = None) -> bool:
        try:
            items = await self._bounded(self.gateway.list(STORAGECLASSES), timeout or 4 * self.timeout)
        except _LOOKUP_ERRORS as exc:
            log.warning("StorageClass list failed", extra=fields(error=str(exc)))
            return False
        self._classes = frozenset(_name(item) for item in items if _name(item))
        now = self._clock()
        self._expandable = {_name(item): _expansion(item, now) for item in items if _name(item)}
        self._default_class = next((_name(item) for item in items if (item.get("metadata") or {}).get(
            "annotations", {}).get(DEFAULT_CLASS_ANNOTATION) == "true"), None)
        return True

    # -- lookups -----------------------------------------------------------------------------------------
    async def facts_for(self, obj: Mapping[str, Any], *, namespace: str | None = None,
                        old: Mapping[str, Any] | None = None, parsed: ParsedSpec | None = None) -> ClusterFacts:
        """Facts about exactly what `obj` references; never raises. `namespace` overrides the object's
        (the AdmissionReview's request.namespace is authoritative on CREATE). ``old``: on an update that
        changes spec.storage, the StorageClasses are listed too (the default class, expansion support).
        ``parsed``: `obj`'s spec, when the caller has parsed it already."""
        try:
            refs = references(obj, parsed)
            ns = namespace or refs.namespace or "default"
            storage_changed = old is not None and _storage(old) != _storage(obj)
            # Only what the object references is looked up, concurrently when more than one may need the API: a
            # task per lookup, even with nothing to look up, was a measurable part of an admission (ISSUE15-round14).
            lookups: dict[str, Awaitable[Any]] = {}
            if refs.storage_classes or storage_changed:
                lookups["classes"] = self.storage_classes(refs.storage_classes, listed=storage_changed)
            if refs.percona:
                lookups["percona"] = self.percona_served()
            if refs.secrets:
                lookups["secrets"] = self.secret_facts(ns, refs.secrets)
            answers = dict(zip(lookups, await asyncio.gather(*lookups.values()), strict=True)) \
                if len(lookups) > 1 else {name: await call for name, call in lookups.items()}
            classes: frozenset[str] | None = answers.get("classes", self._classes)
            percona: bool | None = answers.get("percona", self._percona)
            secrets, lengths = answers.get("secrets", ({}, {}))
        except Exception:  # the snapshot is best effort: an unexpected failure means "unknown"
            log.exception("fact lookup failed")
            return ClusterFacts()
        expandable = frozenset(n for n, (yes, _) in self._expandable.items() if yes) if classes is not None else None
        return ClusterFacts(storage_classes=classes, percona_served=percona, secrets=secrets, key_lengths=lengths,
                            expandable_classes=expandable, default_storage_class=self._default_class)

    async def storage_classes(self, wanted: Iterable[str] = (), *, listed: bool = False) -> frozenset[str] | None:
        """Known StorageClass names, after a point GET for each wanted name the cache does not know.
        ``listed``: make sure the full list is known (the default class and expansion support)."""
        wanted = list(wanted)
        if (wanted or listed) and self._classes is None:
            async with self._classes_lock:  # not started (CLI) or still warming up: one shared LIST
                if self._classes is None:
                    await self.refresh_storage_classes(self.timeout)
        known = self._classes
        now = self._clock()
        unknown = [n for n in wanted if known is None or n not in known]
        added: set[str] = set()
        for name in unknown:
            if now - self._classes_missing.get(name, float("-inf")) < self.negative_ttl and known is not None:
                continue  # a GET just said 404: trust it for a few seconds instead of hammering the API
            try:
                found = await self._bounded(self.gateway.get(STORAGECLASSES, name, timeout=self.timeout))
            except NotFound:
                self._classes_missing[name] = now
                if known is None:
                    known = frozenset()  # "does not exist" is certain even without the full list
                continue
            except _LOOKUP_ERRORS as exc:
                log.warning("StorageClass lookup failed", extra=fields(storage_class=name, error=str(exc)))
                return None
            if _name(found):
                added.add(name)
                self._expandable[name] = _expansion(found, now)
                self._classes_missing.pop(name, None)
        if added:
            known = (known or frozenset()) | added
            if self._classes is not None:
                self._classes = self._classes | added
        if len(self._classes_missing) > 1000:
            self._classes_missing.clear()
        if listed and known is not None:
            relevant = wanted or ([self._default_class] if self._default_class else [])
            await self._recheck_expansion([n for n in relevant if n in known], now)
        return known

    async def _recheck_expansion(self, names: list[str], now: float) -> None:
        """A class read as unable to expand is read again before a resize is denied on it: "set
        allowVolumeExpansion: true" is the denial's own fix, and the resync would see it only within a minute."""
        for name in names:
            yes, read_at = self._expandable.get(name, (False, float("-inf")))
            if yes or now - read_at < self.negative_ttl:
                continue
            try:
                found = await self._bounded(self.gateway.get(STORAGECLASSES, name, timeout=self.timeout))
            except _LOOKUP_ERRORS:
                continue  # the cached answer stands; NotFound too (the class was deleted meanwhile)
            self._expandable[name] = _expansion(found, now)

    async def percona_served(self) -> bool | None:
        """Discovery of the Percona CRD. A yes is cached for `positive_ttl`, a no only for `negative_ttl`,
        so installing the Percona operator later is noticed within seconds, without a restart."""
        async with self._percona_lock:  # single flight: a burst of requests shares one discovery call
            age = self._clock() - self._percona_at
            if self._percona is not None and age < (self.positive_ttl if self._percona else self.negative_ttl):
                return self._percona
            try:
                served = await self._bounded(self.gateway.served(PERCONAPGCLUSTERS))
            except _LOOKUP_ERRORS as exc:
                log.warning("Percona discovery failed", extra=fields(error=str(exc)))
                return None
            self._percona, self._percona_at = served, self._clock()
            return served

    async def secret_facts(self, namespace: str, names: Iterable[str]) -> tuple[
            dict[str, frozenset[str] | None], dict[str, dict[str, int]]]:
        """(key names of each Secret, the length of each key's value)."""
        wanted = sorted(set(names))
        results = await asyncio.gather(*(self._secret(namespace, n) for n in wanted), return_exceptions=True)
        found: dict[str, frozenset[str] | None] = {}
        lengths: dict[str, dict[str, int]] = {}
        for name, result in zip(wanted, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, _LOOKUP_ERRORS):
                    log.warning("Secret lookup failed", extra=fields(namespace=namespace, secret=name,
                                                               error=type(result).__name__))
                continue
            found[name] = None if result is None else result[0]
            if result is not None and result[1]:
                lengths[name] = result[1]
        return found, lengths

    async def _secret(self, namespace: str, name: str) -> tuple[frozenset[str], dict[str, int]] | None:
        try:
            body = await self._bounded(self.gateway.get(SECRETS, name, namespace, timeout=self.timeout))
        except NotFound:
            return None
        # Keep key names and the values' lengths only (rule 10: DittoFS checks some lengths at start); the
        # values are dropped with `body` right here.
        raw = body.get("data")
        data: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        keys = set(_mapping_keys(data)) | set(_mapping_keys(body.get("stringData")))
        lengths = {k: value_length(v) for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}
        return frozenset(keys), lengths

    async def _bounded(self, call: Awaitable[T], seconds: float | None = None) -> T:
        # The client timeout covers the HTTP exchange; this also bounds connection set-up and retries.
        async with asyncio.timeout(seconds or self.timeout + 0.5):
            return await call


def _storage(obj: Mapping[str, Any]) -> Any:
    spec = obj.get("spec")
    return spec.get("storage") if isinstance(spec, Mapping) else None


def _name(obj: Any) -> str:
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return name if isinstance(name, str) else ""


def _mapping_keys(value: Any) -> list[str]:
    return [k for k in value if isinstance(k, str)] if isinstance(value, Mapping) else []


def _expansion(storage_class: Mapping[str, Any], now: float) -> tuple[bool, float]:
    return storage_class.get("allowVolumeExpansion") is True, now
