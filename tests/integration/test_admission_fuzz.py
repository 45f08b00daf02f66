"""SPEC §12: 10,000+ generated AdmissionReviews (valid, invalid, garbage bytes, wrong kinds, huge bodies)
over real HTTPS with keep-alive: no 5xx, no crash, bounded memory, every denial names field paths."""

from __future__ import annotations

import copy
import json
import random
import re
import resource
from pathlib import Path
from typing import Any

import aiohttp

from certs.selfsigned import new_ca
from certs.source import CertificateSource
from tests.support.admission import (
    FakeFacts,
    FakeRecorder,
    client_context,
    denial_causes,
    dittoserver,
    review,
    write_pair,
)
from webhook.server import WEBHOOK_PATH, AdmissionHandler, WebhookServer

COUNT = 10_500
VALID_SPEC: dict[str, Any] = {
    "storage": {"metadataSize": "1Gi", "contentSize": "5Gi", "storageClassName": "standard"},
    "adapters": {"nfs": {"enabled": True, "port": 12049, "settings": {"maxVersion": "4.1", "leaseTime": "90s"}},
                 "smb": {"enabled": True, "port": 1445, "settings": {"minDialect": "SMB3.0", "signing": "required"}}},
    "controlPlane": {"port": 8080}, "metrics": {"enabled": True, "port": 9090},
    "logging": {"level": "INFO", "format": "json"},
    "percona": {"enabled": False, "backup": {"fullSchedule": "0 2 * * *"}},
    # The declared file service (SPEC §13.1): its entries are mutated too, and refer to each other.
    "stores": {"local": [{"name": "default"}, {"name": "fast", "path": "/data/store/block/fast"}]},
    "groups": [{"name": "readers", "gid": 2000}],
    "users": [{"name": "alice", "passwordSecretRef": {"name": "alice-pw", "key": "password"}, "uid": 1000,
               "groups": ["readers"]}],
    "shares": [{"name": "/projects", "defaultPermission": "none", "quota": "10Gi", "localBlockStore": "fast",
                "nfs": {"squash": "root_to_guest", "anonymousUID": 65534},
                "permissions": [{"user": "alice", "level": "read-write"}, {"group": "readers", "level": "read"}],
                "snapshotPolicy": {"interval": "@daily", "keepLast": 7}}],
}
# A rule of one section may name a field of another that refers to it (a removed group is reported where a user
# or a grant names it).
REFERRED_FROM = {"spec.groups": {"spec.users", "spec.shares"}, "spec.users": {"spec.shares"},
                 "spec.stores": {"spec.shares"}}
JUNK: list[Any] = [None, True, -1, 0, 70000, 1e308, "", "x" * 300, "5 GB", [], {}, [1, "a"], {"$ref": "#"}]


def mutate(rng: random.Random, spec: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Replace or delete a random leaf, or insert an unknown field, a few times; also return the field
    paths ("spec.adapters.nfs.port") that were touched, so a denial can be checked against them."""
    spec = copy.deepcopy(spec)
    touched: list[str] = []
    for _ in range(rng.randint(1, 4)):
        node: Any = spec
        path: list[str] = ["spec"]
        while isinstance(node, dict) and node and rng.random() < 0.75:
            key = rng.choice(sorted(node))
            if isinstance(node[key], list) and node[key] and isinstance(node[key][0], dict):
                index = rng.randrange(len(node[key]))  # into a list entry: spec.shares[0]
                path.append(f"{key}[{index}]")
                node = node[key][index]
                continue
            if not isinstance(node[key], dict):
                break
            path.append(key)
            node = node[key]
        if not isinstance(node, dict):
            continue
        choice = rng.random()
        if choice < 0.6 and node:
            key = rng.choice(sorted(node))
            node[key] = copy.deepcopy(rng.choice(JUNK))
        elif choice < 0.8 and node:
            key = rng.choice(sorted(node))
            node.pop(key)
        else:
            key = f"unknown{rng.randint(0, 9)}"
            node[key] = copy.deepcopy(rng.choice(JUNK))
        touched.append(".".join([*path, key]))
    return spec, touched


def section(field: str) -> str:
    """The spec section a field path is in: "spec.adapters.nfs.port" or "spec.adapters[x]" -> "spec.adapters"."""
    return ".".join(re.split(r"[.\[]", field)[:2])


def body_for(rng: random.Random, i: int) -> tuple[str, bytes, list[str]]:
    """(label, body, the field paths an "invalid" body changed)."""
    kind = i % 10
    if kind < 3:
        return "valid", json.dumps(review(dittoserver(copy.deepcopy(VALID_SPEC)))).encode(), []
    if kind < 6:
        op = rng.choice(["CREATE", "UPDATE"])
        old = dittoserver(copy.deepcopy(VALID_SPEC)) if op == "UPDATE" else None
        spec, touched = mutate(rng, VALID_SPEC)
        return "invalid", json.dumps(review(dittoserver(spec), operation=op, old=old)).encode(), touched
    if kind == 6:
        return "garbage", rng.randbytes(rng.randint(0, 2048)), []
    if kind == 7:
        wrong = review(dittoserver(VALID_SPEC))
        wrong["kind"] = rng.choice(["Pod", "AdmissionResponse", 7, None])
        return "wrong-kind", json.dumps(wrong).encode(), []
    if kind == 8:
        return "json-junk", json.dumps(copy.deepcopy(rng.choice(JUNK))).encode(), []
    if i % 100 == 9:  # a handful of 4 MiB bodies (over the 3 MiB cap)
        return "huge", b'{"apiVersion": "admission.k8s.io/v1", "x": "' + b"a" * (4 << 20) + b'"}', []
    return "valid-update", json.dumps(review(dittoserver(VALID_SPEC), operation="UPDATE",
                                             old=dittoserver(VALID_SPEC))).encode(), []


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def test_ten_thousand_reviews_never_5xx(tmp_path: Path) -> None:
    ca = new_ca()
    write_pair(tmp_path / "certs", ca)
    server = WebhookServer(AdmissionHandler(FakeFacts(), FakeRecorder()), CertificateSource(tmp_path / "certs"),
                           host="127.0.0.1", port=0)
    await server.start()
    rng = random.Random(20261125)
    counts: dict[str, int] = {}
    statuses: dict[int, int] = {}
    denials = 0
    by_section: dict[str, int] = {}
    peak_before = 0.0
    try:
        connector = aiohttp.TCPConnector(ssl=client_context(ca), limit=4)
        async with aiohttp.ClientSession(connector=connector) as session:
            url = f"https://127.0.0.1:{server.port}{WEBHOOK_PATH}"
            for i in range(COUNT):
                if i == 500:
                    peak_before = rss_mib()
                label, data, touched = body_for(rng, i)
                counts[label] = counts.get(label, 0) + 1
                async with session.post(url, data=data, headers={"Content-Type": "application/json"}) as resp:
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                    assert resp.status < 500, (label, resp.status, await resp.text())
                    if resp.status != 200:
                        assert resp.status == 400 and (await resp.text()).strip(), label
                        continue
                    answer = await resp.json()
                    response = answer["response"]
                    if label in ("valid", "valid-update"):
                        assert response["allowed"] is True, response
                    if not response["allowed"]:
                        denials += 1
                        assert label == "invalid", (label, response)  # only mutated specs may be denied
                        fields = [c["field"] for c in denial_causes(response)]
                        # A denial is about what was changed: some cause lies in a section a mutation touched
                        # (cross-field rules may name a sibling, e.g. the other port of a clash).
                        changed = {section(t) for t in touched}
                        changed |= {r for c in changed for r in REFERRED_FROM.get(c, ())}
                        assert {section(f) for f in fields} & changed, (touched, fields)
                        by_section[section(fields[0])] = by_section.get(section(fields[0]), 0) + 1
    finally:
        await server.stop()
    growth = rss_mib() - peak_before
    print(f"sent {COUNT}: {counts}; HTTP {statuses}; denials {denials} by section {by_section}; "
          f"peak RSS growth {growth:.1f} MiB")
    assert sum(counts.values()) >= 10_000 and denials > 1000
    # Denials come from every part of the spec, not one rule that rejects everything.
    assert len(by_section) >= 5, by_section
    assert growth < 64, f"memory grew by {growth:.1f} MiB"
