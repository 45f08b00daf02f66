"""Assembles the webhook for `dittoctl run` from the process settings."""

from __future__ import annotations

from typing import Protocol

from certs.source import CertificateSource
from dittoctl.kube.events import EventRecorder
from dittoctl.kube.gateway import Gateway
from webhook.facts import FactSource
from webhook.server import AdmissionHandler, EventSink, Service, WebhookServer


class WebhookSettings(Protocol):
    """The fields of `dittoctl.settings.RunSettings` the webhook reads."""

    webhook_host: str
    webhook_port: int
    cert_dir: str
    tls_mode: str  # certManager | selfSigned | provided
    webhook_config_name: str
    service_name: str
    service_namespace: str


def self_signed_secret_name(service_name: str) -> str:
    """Secret holding the CA and leaf in selfSigned mode (the chart grants create/patch on this name)."""
    return f"{service_name}-tls"


async def build_webhook(settings: WebhookSettings, gateway: Gateway,
                        recorder: EventSink | None = None) -> WebhookServer:
    """The webhook server; `await server.start()` serves, `server.ready` feeds /readyz.

    certManager and provided modes read a mounted Secret from `cert_dir`; selfSigned mode also runs the
    manager that writes those files and keeps the configuration's caBundle current.
    """
    facts = FactSource(gateway)
    certs = CertificateSource(settings.cert_dir)
    services: list[Service] = [facts]
    if settings.tls_mode == "selfSigned":
        # Imported here: only this mode makes certificates (the others would pay ~5 ms at start for it).
        from certs.selfsigned import SelfSignedManager

        services.append(SelfSignedManager(
            gateway, namespace=settings.service_namespace,
            secret_name=self_signed_secret_name(settings.service_name), service=settings.service_name,
            webhook_config_name=settings.webhook_config_name, cert_dir=settings.cert_dir,
            on_files_written=certs.reload))
    handler = AdmissionHandler(facts, recorder or EventRecorder(gateway))
    return WebhookServer(handler, certs, host=settings.webhook_host, port=settings.webhook_port,
                         services=services)
