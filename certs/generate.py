"""`dittoctl certs generate`: a CA and a serving certificate for the `provided` TLS mode."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from certs.selfsigned import CA_DAYS, LEAF_DAYS, new_ca, new_leaf, service_dns_names, split_sans, write_atomic


def generate(
    service: str,
    namespace: str,
    out_dir: Path,
    *,
    extra_sans: Sequence[str] = (),
    ca_days: int = CA_DAYS,
    leaf_days: int = LEAF_DAYS,
) -> list[Path]:
    """Write ca.crt, tls.crt and tls.key (0600) into `out_dir`; returns the paths written.

    The leaf is valid for the Service's DNS names plus `extra_sans` (DNS names or IP addresses). The CA key
    is not written: nothing else should be signed with it, and renewal means running this again.
    Load the result with `kubectl create secret generic <name> --from-file=<out_dir>`.
    """
    dns, ips = split_sans(extra_sans)
    ca = new_ca(f"{service}.{namespace} webhook CA", days=ca_days)
    leaf = new_leaf(ca, service_dns_names(service, namespace) + dns, ips, days=leaf_days)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data, private in (("ca.crt", ca.cert_pem, False), ("tls.crt", leaf.cert_pem, False),
                                ("tls.key", leaf.key_pem, True)):
        write_atomic(out_dir / name, data, private=private)
        written.append(out_dir / name)
    return written
