"""What the control plane and the real node share: the processes they spawned, by component name."""

from __future__ import annotations

import subprocess


class Components:
    """A set of spawned component processes (``_procs``, filled by the subclass)."""

    _procs: dict[str, subprocess.Popen[bytes]]

    def is_running(self, name: str) -> bool:
        return self.pid(name) is not None

    def pid(self, name: str) -> int | None:
        proc = self._procs.get(name)
        return proc.pid if proc is not None and proc.poll() is None else None
