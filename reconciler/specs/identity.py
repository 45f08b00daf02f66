"""The identity-provider records (LDAP, Kerberos), pure: one shape serves both places DittoFS reads them.

DittoFS v0.29.0 seeds the `ldap`/`kerberos` config sections into its database at first boot and ignores
them afterwards (docs/DITTOFS_FACTS.md). So the same record is rendered into `config.yaml` (the seed, and
what DittoFS validates at start) and compared with `GET /identity-providers/{type}/config` by the planner,
which converges any later difference over REST. The config keys and the REST fields are the same names.
Passwords are never part of a record: the pod gets them as environment variables, the planner as
``SecretValue``s.
"""

from __future__ import annotations

from typing import Any

from dittoctl.api.models import DittoServerSpec, KerberosSpec, LdapSpec
from dittoctl.api.secrets import KEYTAB_FILE, KRB5_CONF_FILE, LDAP_CA_FILE

LDAP_DURATIONS = frozenset({"timeout"})
KERBEROS_DURATIONS = frozenset({"max_clock_skew", "context_ttl"})


def ldap_record(ldap: LdapSpec, *, clearing: bool = False) -> dict[str, Any]:
    """``clearing``: an optional part left out is an explicit empty value, so that the planner clears it in
    DittoFS once it leaves the spec (config.yaml keeps its first-boot shape: a change there would roll pods)."""
    tls: dict[str, Any] = {"min_version": ldap.tls_min_version}
    if ldap.ca_secret_ref is not None:
        tls["ca_cert_file"] = LDAP_CA_FILE
    elif clearing:
        tls["ca_cert_file"] = ""  # else DittoFS keeps dialing with a CA file the pod no longer has
    return {
        "enabled": True,
        "url": ldap.url,
        "start_tls": ldap.start_tls,
        "allow_plaintext": ldap.allow_plaintext,
        "base_dn": ldap.base_dn,
        "bind_dn": ldap.bind_dn,
        "user_attr": ldap.user_attribute,
        "realm": ldap.realm,
        "idmap": ldap.id_mapping,
        "nested_groups": ldap.nested_groups,
        "timeout": ldap.timeout,
        "max_group_results": ldap.max_group_results,
        "tls": tls,
    }


def kerberos_realm(kerberos: KerberosSpec) -> str:
    """DittoFS's own default: the service principal's @REALM suffix."""
    if kerberos.realm:
        return kerberos.realm
    _, at, realm = kerberos.service_principal.rpartition("@")
    return realm if at else ""


def kerberos_record(kerberos: KerberosSpec, *, clearing: bool = False) -> dict[str, Any]:
    """``clearing``: as for ``ldap_record`` (a machine account left out is turned off)."""
    realm = kerberos_realm(kerberos)
    record: dict[str, Any] = {
        "enabled": True,
        "keytab_path": KEYTAB_FILE,
        "service_principal": kerberos.service_principal,
        "realm": realm,
        "netbios_domain": kerberos.netbios_domain,
        "dns_domain": kerberos.dns_domain or realm.lower(),  # DittoFS's default, so a re-read compares equal
        "krb5_conf": KRB5_CONF_FILE,
        "max_clock_skew": kerberos.max_clock_skew,
        "context_ttl": kerberos.context_ttl,
        "max_contexts": kerberos.max_contexts,
    }
    machine = kerberos.machine_account
    if machine is not None:
        record["machine_account"] = {"enabled": True, "account_name": machine.account_name,
                                     "dc_address": list(machine.dc_addresses)}
    elif clearing:
        record["machine_account"] = {"enabled": False, "account_name": "", "dc_address": []}
    return record


def identity_config(spec: DittoServerSpec) -> dict[str, Any]:
    """The `ldap`/`kerberos` sections of config.yaml (the first boot's seed)."""
    out: dict[str, Any] = {}
    if spec.identity.ldap is not None:
        out["ldap"] = ldap_record(spec.identity.ldap)
    if spec.identity.kerberos is not None:
        out["kerberos"] = kerberos_record(spec.identity.kerberos)
    return out
