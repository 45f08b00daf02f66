"""``python -m tests.testbed up|build``: run the control plane in the foreground, or build the binaries."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from types import FrameType

from .cluster import Testbed
from .paths import ensure_binaries, run_build
from .safety import withhold_proxies


def _up(args: argparse.Namespace) -> int:
    bins = ensure_binaries(["kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "kwok", "kubectl"])
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    t0 = time.monotonic()
    tb = Testbed(binaries=bins, keep=args.keep or None)
    print(f"[testbed] work dir {tb.workdir}", file=sys.stderr)
    tb.start()
    try:
        took = time.monotonic() - t0
        rss = sum(tb.rss_bytes().values())
        print(f"[testbed] control plane ready in {took:.1f}s; RSS {rss / 2**20:.0f} MiB", file=sys.stderr)
        print(f"[testbed] logs: {tb.logs_dir}; audit log: {tb.audit_log}", file=sys.stderr)
        print(
            f"[testbed] operator kubeconfig (CN={tb.operator_user}): {tb.operator_kubeconfig}",
            file=sys.stderr,
        )
        path = os.pathsep.join(str(d) for d in bins.bin_dirs())
        print(f"export KUBECONFIG={tb.kubeconfig}")
        print(f'export PATH="{path}:$PATH"', flush=True)
        print("[testbed] running; Ctrl-C or SIGTERM tears it down", file=sys.stderr)
        while not stop.wait(1.0):
            for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"):
                if not tb.is_running(name):
                    print(f"[testbed] {name} died; see {tb.logs_dir / (name + '.log')}", file=sys.stderr)
                    return 1
        return 0
    finally:
        print("[testbed] tearing down", file=sys.stderr)
        tb.stop()


def main(argv: list[str] | None = None) -> int:
    withhold_proxies()  # the demo's own probes, and the operator it starts, go nowhere but this machine
    parser = argparse.ArgumentParser(prog="python -m tests.testbed")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the control plane and keep it running until Ctrl-C/SIGTERM")
    up.add_argument("--keep", action="store_true", help="keep the work dir (like DITTOFS_TESTBED_KEEP=1)")
    sub.add_parser("demo", help="control plane + dittoctl run + a sample DittoServer reaching Ready")
    build = sub.add_parser("build", help="build (or reuse cached) binaries with build.sh")
    build.add_argument("what", nargs="?", default="all", help="all|k8s|etcd|kwok|dfs|kubectl")
    args = parser.parse_args(argv)
    if args.cmd == "demo":
        from .demo import main as demo

        return demo()
    if args.cmd == "build":
        run_build(args.what)
        return 0
    return _up(args)


if __name__ == "__main__":
    sys.exit(main())
