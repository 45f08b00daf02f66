"""The test bed as the benchmarks run it: `tests.testbed.Testbed`, optionally with the kube-controller-
manager's client rate limit raised (`--kcm-qps`, a diagnostic: by default the test bed runs unchanged)."""

from __future__ import annotations

from pathlib import Path

from tests.testbed import Binaries, Testbed

KCM_DEFAULT_QPS = 20.0  # kube-controller-manager --kube-api-qps default


def kcm_qps(tb: Testbed) -> float:
    """The kube-controller-manager's effective client QPS limit, read from its command line (last flag wins)."""
    pid = tb.pid("kube-controller-manager")
    if pid is None:
        return KCM_DEFAULT_QPS
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return KCM_DEFAULT_QPS
    qps = KCM_DEFAULT_QPS
    for arg in argv:
        if arg.startswith("--kube-api-qps="):
            qps = float(arg.split("=", 1)[1])
    return qps


class BenchTestbed(Testbed):
    __test__ = False

    def __init__(self, *, binaries: Binaries, keep: bool | None = None, kcm_qps: float | None = None,
                 workdir: Path | None = None) -> None:
        super().__init__(workdir, binaries=binaries, keep=keep)
        self.kcm_qps = kcm_qps
        if kcm_qps is not None and not callable(getattr(Testbed, "_argv", None)):
            raise RuntimeError("--kcm-qps needs Testbed._argv(name) to extend the KCM flags; it is gone")

    def _argv(self, name: str) -> list[str]:
        argv = super()._argv(name)
        if name == "kube-controller-manager" and self.kcm_qps is not None:
            burst = int(self.kcm_qps * 2)
            argv += [f"--kube-api-qps={self.kcm_qps:g}", f"--kube-api-burst={burst}"]
        return argv
