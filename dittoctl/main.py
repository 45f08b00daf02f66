"""Process wiring for `dittoctl run`: kopf (reconciler), the webhook and the health server share one loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import ipaddress
import logging
import os
import signal
import threading
from collections.abc import Awaitable
from typing import Any

import kopf
import uvloop
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dittoctl.api.kinds import CRD_NOT_SERVED, DITTOSERVERS
from dittoctl.kube import heap, metrics
from dittoctl.kube.gateway import ApiError, Gateway, NoCredentials, kubeconfig_files, load_client
from dittoctl.kube.logs import described, fields
from dittoctl.settings import RunSettings
from reconciler.context import Provisioning
from reconciler.handlers import Controller, configure_persistence, register, watch_streams
from reconciler.watch import PAGE

log = logging.getLogger("dittofs.main")


class CrdGone(Exception):
    """kopf stopped because the DittoServer API went away (the CRD was deleted)."""


class StartError(Exception):
    """The process cannot start as told (a port taken): one log line and exit 1, not a traceback."""


async def _listen(what: str, host: str, port: int, start: Awaitable[None]) -> None:
    try:
        await start
    except OSError as exc:
        where = f"{host}:{port}" if host else f"port {port}"
        raise StartError(f"cannot listen for {what} on {where}: {exc.strerror or exc}") from None


class Health:
    """/healthz, /readyz and /metrics on the health port."""

    def __init__(self, controller: Controller | None, webhook: Any | None) -> None:
        self.controller = controller
        self.webhook = webhook
        self.kopf_ready = asyncio.Event()
        self.kopf_task: asyncio.Task[Any] | None = None
        self.stopping = False
        self._runner: web.AppRunner | None = None

    def liveness_problems(self) -> list[str]:
        """Answering at all proves the event loop runs; these say a component stopped for good."""
        problems = []
        if self.kopf_task is not None and self.kopf_task.done():
            problems.append("kopf (the watch streams) stopped")
        if self.controller is not None:
            problems.extend(f"{plural} watch silent for {int(silent)}s"
                            for plural, silent in self.controller.stale_watches())
        return problems

    def readiness_problems(self) -> list[str]:
        problems = ["shutting down"] if self.stopping else []
        if self.controller is not None and self.controller.waiting is not None:
            problems.append(self.controller.waiting)
        elif self.controller is not None and not (self.kopf_ready.is_set() and self.controller.primed.is_set()):
            problems.append("watch caches not warm yet (first listing pending)")
            problems.extend(f"{w.kind.plural} watch failing (retrying): {w.error}" for w in self.controller.watches
                            if w.error is not None and not w.started.is_set())
        if self.webhook is not None and not self.webhook.ready:
            problems.append("webhook not serving (no valid certificate loaded)")
        return problems

    async def healthz(self, _: web.Request) -> web.Response:
        return _verdict(self.liveness_problems(), "unhealthy")

    async def readyz(self, _: web.Request) -> web.Response:
        return _verdict(self.readiness_problems(), "not ready")

    async def metrics(self, _: web.Request) -> web.Response:
        if self.controller is not None:
            counts = dict.fromkeys(metrics.PHASES, 0)
            for body in self.controller.cache.all_servers():
                phase = (body.get("status") or {}).get("phase") or "Pending"
                counts[phase] = counts.get(phase, 0) + 1
            for phase, count in counts.items():
                metrics.SERVERS.labels(phase).set(count)
        resp = web.Response(body=generate_latest())
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return resp

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # None: every address of each family (the kubelet probes the pod's IPv6 address on an IPv6 cluster).
        await web.TCPSite(self._runner, host or None, port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _verdict(problems: list[str], failing: str) -> web.Response:
    return web.json_response({"status": "ok" if not problems else failing, "problems": problems},
                             status=200 if not problems else 503)


START_COLLECTOR_AFTER = 5.0  # seconds; the garbage collector's latest start (see _collect_once_started)
KOPF_WORKER_IDLE = 0.1  # seconds a per-object kopf worker waits for the next event before it exits


def kopf_settings(settings: kopf.OperatorSettings) -> None:
    settings.posting.enabled = False  # we post our own, deduplicated events
    settings.scanning.disabled = True  # no cluster-wide CRD/namespace scanning (and no RBAC for it)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.persistence.finalizer = "dittofs.dittofs.com/kopf"  # unused: no change-tracking handlers
    # kopf's per-object worker keeps its last event's decoded body while it idles (5 s by default), so after a
    # restart at 300 servers 300 bodies outlived the passes around them and pinned the heap they were decoded
    # in; listing in pages, like our own watches, keeps one page decoded at a time. Together: 112.5 -> 104 MiB
    # 10 s after such a restart; idling 0.1 s instead of 0.5 s, 94.6 -> 85.5 MiB (ISSUE15-round13). A worker is
    # cheap to start again for an object's next event.
    settings.watching.chunk_size = PAGE
    settings.queueing.idle_timeout = KOPF_WORKER_IDLE
    configure_persistence(settings)


async def run(settings: RunSettings, stop: asyncio.Event | None = None, hurry: asyncio.Event | None = None) -> None:
    """Serve until ``stop``; ``hurry`` (a second stop signal) cuts the shutdown delay short."""
    stop, hurry = stop or asyncio.Event(), hurry or asyncio.Event()
    if settings.kubeconfig:  # kopf's login reads it: the same existing files as the operator's own client
        os.environ["KUBECONFIG"] = os.pathsep.join(kubeconfig_files(settings.kubeconfig)) or settings.kubeconfig
    api = await load_client(settings.kubeconfig,
                            streams=watch_streams(settings.namespaces) if settings.reconciler else 0)
    gateway = Gateway(api)
    controller: Controller | None = None
    webhook: Any | None = None
    tasks: list[asyncio.Task[Any]] = []

    if settings.reconciler:
        controller = Controller(gateway, workers=settings.workers, drift_interval=settings.drift_interval,
                                namespaces=settings.namespaces, provisioning=Provisioning(
                                    settings.server_address,
                                    tuple(ipaddress.ip_network(n, strict=False) for n in settings.provision_networks),
                                    operator_namespace=settings.operator_namespace))
        controller.queue.on_result = metrics.observe_reconcile

    health = Health(controller, None)
    try:
        if settings.webhook:
            from webhook.wiring import build_webhook

            # One recorder for both halves, so their events share the 10-minute deduplication.
            webhook = health.webhook = await build_webhook(settings, gateway,
                                                           controller.recorder if controller else None)
            await _listen("admission requests", settings.webhook_host, settings.webhook_port, webhook.start())
        await _listen("health and metrics", settings.health_host, settings.health_port,
                      health.start(settings.health_host, settings.health_port))
    except BaseException:
        if webhook is not None:
            await webhook.stop()
        await gateway.close()
        raise

    if controller is not None:
        registry = kopf.OperatorRegistry()
        register(registry, controller)

        @kopf.on.login(registry=registry)
        def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
            if settings.kubeconfig or os.environ.get("KUBECONFIG"):
                return kopf.login_with_kubeconfig(**kwargs)
            account = kopf.login_with_service_account(**kwargs)
            if account is None:
                return kopf.login_with_kubeconfig(**kwargs)
            # kopf names the API https://kubernetes.default.svc, which needs cluster DNS; talk to the server
            # the gateway uses (KUBERNETES_SERVICE_HOST/PORT, as client-go does), so both halves agree.
            return dataclasses.replace(account, server=str(api.configuration.host))

        @kopf.on.startup(registry=registry)
        async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
            kopf_settings(settings)

        await controller.reconciler.discovery.refresh()
        if settings.leader_election:
            from reconciler.leader import LeaderElector

            elector = LeaderElector(gateway, settings.lease_name, settings.lease_namespace, controller,
                                    anchor=settings.webhook_config_name if settings.webhook else None)
            tasks.append(asyncio.create_task(elector.run(), name="leader-election"))
            controller.start_background()
        else:
            controller.start()
            metrics.LEADER.labels(settings.lease_name).set(1)
        from reconciler.leader import own_identity

        async def kopf_once_served(served: asyncio.Event) -> None:
            await served.wait()  # kopf never looks for a resource again that it did not find at its start
            await kopf.operator(
                registry=registry,
                clusterwide=not settings.namespaces,
                namespaces=settings.namespaces,
                standalone=True,
                # Unnamed, kopf calls getpass.getuser(), which fails for a uid without a passwd entry (our image).
                identity=own_identity(),  # type: ignore[arg-type]  # kopf's Identity: a NewType of str, not exported
                ready_flag=health.kopf_ready,
            )

        health.kopf_task = asyncio.create_task(kopf_once_served(controller.crd_served), name="kopf")
        tasks.append(health.kopf_task)
    if controller is not None:
        tasks.append(asyncio.create_task(_reclaim_signals(health.kopf_ready, stop, hurry), name="reclaim-signals"))
    collector = asyncio.create_task(_collect_once_started(health.kopf_ready if controller is not None else None))
    log.info("dittofs-operator started", extra=fields(
        reconciler=settings.reconciler, webhook=settings.webhook,
        namespaces=",".join(settings.namespaces) or "*"))

    try:
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is waiter or (error := task.exception()) is None:
                continue
            if task is health.kopf_task and not await _still_served(gateway):
                # kopf cannot watch a resource again once it is gone; a new process waits for the CRD (and says
                # so in /readyz) instead of a traceback from kopf's watcher.
                log.error(f"{CRD_NOT_SERVED}; exiting: a restart waits for it")
                raise CrdGone() from error
            raise error
    finally:
        stop.set()
        log.info("dittofs-operator stopping")
        collector.cancel()
        kopf_task = next((t for t in tasks if t.get_name() == "kopf"), None)
        others = [t for t in tasks if t is not kopf_task]
        for task in others:  # leader election first: it hands the Lease over on its way out
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        if controller is not None:
            await controller.stop()
        if webhook is not None:
            if settings.shutdown_delay > 0 and not hurry.is_set():
                health.stopping = True
                webhook.drain()
                log.info("answering admission requests until the shutdown delay ends (a second stop signal ends it)",
                         extra=fields(seconds=settings.shutdown_delay))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(hurry.wait(), settings.shutdown_delay)
            await webhook.stop()
        await health.stop()
        if kopf_task is not None:
            # Cancelling (rather than raising its stop flag) skips kopf's fixed 5 s wait for "hung" tasks.
            kopf_task.cancel()
            await asyncio.gather(kopf_task, return_exceptions=True)
        await gateway.close()
        log.info("dittofs-operator stopped")


async def _still_served(gateway: Gateway) -> bool:
    """True unless discovery answers that the DittoServer API is gone."""
    try:
        return await gateway.served(DITTOSERVERS)
    except Exception:
        return True  # no answer: the original error is the better report


async def _collect_once_started(started: asyncio.Event | None) -> None:
    """Start-up objects (modules, models, kopf's registries, the first listing) live for the whole process: keep
    them out of the cyclic collector's full passes, which otherwise pause the loop for tens of milliseconds, and
    only then turn the collector on (``dittoctl run`` starts with it off). A start that hangs (no apiserver)
    gets it back after a few seconds: its retries make garbage."""
    if started is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(started.wait(), START_COLLECTOR_AFTER)
    gc.freeze()
    gc.enable()


def _handle_signals(stop: asyncio.Event, hurry: asyncio.Event) -> None:
    """SIGTERM/SIGINT stop; a second one while stopping skips what is left of the shutdown delay."""
    def signalled() -> None:
        (hurry if stop.is_set() else stop).set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, signalled)


async def _reclaim_signals(kopf_ready: asyncio.Event, stop: asyncio.Event, hurry: asyncio.Event) -> None:
    """kopf installs its own SIGTERM/SIGINT handlers; on them it waits 5 s for tasks it did not start.
    Once kopf runs, take the signals back so shutdown is ours: components first, kopf cancelled last."""
    await kopf_ready.wait()
    if threading.current_thread() is not threading.main_thread():
        return
    _handle_signals(stop, hurry)
    await asyncio.Event().wait()  # keep the task alive until shutdown cancels it


def main_run(settings: RunSettings) -> int:
    heap.pin_mmap_threshold()  # process-wide, so before the first large allocation

    async def runner() -> None:
        stop, hurry = asyncio.Event(), asyncio.Event()
        _handle_signals(stop, hurry)
        await run(settings, stop, hurry)

    try:
        # uvloop runs the loop and its TLS in C: 9 % less operator CPU over the 300 burst (ISSUE15-round11).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop:
            loop.run(runner())
    except StartError as exc:
        log.error(str(exc))
        return 1
    except CrdGone:
        return 1
    except (NoCredentials, ApiError):
        raise  # the CLI's edge says these in one line, with the fix
    except Exception as exc:  # a component stopped for good (kopf's watch refused, a defect): one ERROR line says
        log.exception(f"dittofs-operator stopped on an error: {described(exc)}")  # so, the traceback as its field
        return 1
    return 0
