"""Offline OCI images for the real node: built with Debian's ``umoci``, imported into containerd.

Nothing is ever pulled (no registry is reachable), so every image a real pod uses is made here from
files already on the host and imported with ``ctr images import``:

- ``pause``: a 10-line static C program (gcc) that sleeps and reaps, as the sandbox image;
- ``dfs``: the cached ``dfs`` binary at ``/app/dfs`` (the operator's command) plus busybox-static for the
  preStop ``sleep`` and ``kubectl exec``, tagged as the operator's default image so ``IfNotPresent``
  finds it unchanged;
- ``pg-isready``: Debian's ``pg_isready`` with its shared libraries, plus busybox, for the Percona
  ``wait-for-postgres`` init container;
- the operator itself (``operator_image()``): the repository's Dockerfile built with buildah by
  ``build.sh operator-image`` (``image/build-operator.sh``), an OCI archive keyed by the build context's
  contents, imported like the others with ``import_archive``.

Archives are cached under ``$CACHE/images/`` by a key over their inputs (path, size, mtime), so a warm
start only imports them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from dittoctl.api.models import DEFAULT_IMAGE

from .paths import BUILD_SH, cache_dir
from .safety import build_env

PAUSE_IMAGE = "localhost/testbed/pause:3.10"
PG_ISREADY_IMAGE = "localhost/testbed/pg-isready:15"
BUSYBOX = Path("/usr/bin/busybox")
PG_ISREADY = Path("/usr/lib/postgresql/15/bin/pg_isready")
NONROOT = 65532
# Bump when the layout of an image changes: the cache key must change with it.
BUILDER_VERSION = "1"

PAUSE_C = r"""
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>
static void stop(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
    struct sigaction a = {0};
    a.sa_handler = stop; sigaction(SIGINT, &a, 0); sigaction(SIGTERM, &a, 0);
    a.sa_handler = reap; a.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &a, 0);
    for (;;) pause();
}
"""


class ImageBuildError(RuntimeError):
    """An image could not be built or imported; the message names the failing command."""


def normalize_ref(ref: str) -> str:
    """What containerd (and so the kubelet) calls ``ref``: ``a/b:t`` is ``docker.io/a/b:t``."""
    first = ref.split("/", 1)[0]
    if "/" not in ref:
        return f"docker.io/library/{ref}"
    if "." in first or ":" in first or first == "localhost":
        return ref
    return f"docker.io/{ref}"


DFS_IMAGE = normalize_ref(DEFAULT_IMAGE)


@dataclass
class ImageSpec:
    ref: str
    entrypoint: list[str]
    user: str
    files: dict[str, Path] = field(default_factory=dict)  # path in the rootfs -> host file
    busybox: bool = True
    compile_pause: bool = False

    def key(self) -> str:
        h = hashlib.sha256(f"{BUILDER_VERSION}|{self.ref}|{self.entrypoint}|{self.user}|{self.busybox}".encode())
        h.update(PAUSE_C.encode() if self.compile_pause else b"")
        inputs = dict(self.files)
        if self.busybox:
            inputs["/bin/busybox"] = BUSYBOX
        for dest, src in sorted(inputs.items()):
            st = src.stat()
            h.update(f"{dest}={src}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]


def _run(*argv: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ImageBuildError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")


def _shared_libs(binary: Path) -> list[Path]:
    """The libraries (and the loader) ``ldd`` resolves for a dynamic binary."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs: list[Path] = []
    for line in out.splitlines():
        parts = line.split()
        for token in parts:
            if token.startswith("/"):
                libs.append(Path(token))
                break
    return libs


def dfs_image(dfs: Path) -> ImageSpec:
    return ImageSpec(ref=DFS_IMAGE, entrypoint=["/app/dfs"], user=str(NONROOT), files={"/app/dfs": dfs})


def pause_image() -> ImageSpec:
    return ImageSpec(ref=PAUSE_IMAGE, entrypoint=["/pause"], user="65535", busybox=False, compile_pause=True)


def pg_isready_image() -> ImageSpec:
    files = {"/usr/bin/pg_isready": PG_ISREADY}
    for lib in _shared_libs(PG_ISREADY):
        files[str(lib)] = lib.resolve()
    return ImageSpec(ref=PG_ISREADY_IMAGE, entrypoint=["/bin/sh"], user=str(NONROOT), files=files)


def _populate(rootfs: Path, spec: ImageSpec, scratch: Path) -> None:
    for d in ("bin", "etc", "tmp", "app"):
        (rootfs / d).mkdir(exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    (rootfs / "etc" / "passwd").write_text(f"root:x:0:0:root:/:/bin/sh\nnonroot:x:{NONROOT}:{NONROOT}::/tmp:/bin/sh\n")
    (rootfs / "etc" / "group").write_text(f"root:x:0:\nnonroot:x:{NONROOT}:\n")
    for dest, src in spec.files.items():
        target = rootfs / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    if spec.busybox:
        shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
        applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout
        for applet in applets.split():
            link = rootfs / "bin" / applet
            if not link.exists():
                link.symlink_to("busybox")
    if spec.compile_pause:
        src = scratch / "pause.c"
        src.write_text(PAUSE_C)
        _run("gcc", "-static", "-O2", "-o", str(rootfs / "pause"), str(src))


def build_archive(spec: ImageSpec, cache: Path | None = None) -> Path:
    """An OCI image archive for ``spec`` (cached), named so that ``ctr images import`` tags it ``spec.ref``."""
    out_dir = (cache or cache_dir()) / "images"
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = spec.ref.rsplit("/", 1)[-1].replace(":", "-")
    archive = out_dir / f"{slug}-{spec.key()}.tar"
    if archive.is_file():
        return archive
    with tempfile.TemporaryDirectory(prefix="testbed-image-", dir=out_dir) as tmp:
        t = Path(tmp)
        layout, bundle, tag = t / "layout", t / "bundle", "testbed"
        _run("umoci", "init", "--layout", str(layout))
        _run("umoci", "new", "--image", f"{layout}:{tag}")
        _run("umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle))
        _populate(bundle / "rootfs", spec, t)
        _run("umoci", "repack", "--image", f"{layout}:{tag}", str(bundle))
        config = ["--config.user", spec.user, "--config.workingdir", "/"]
        for arg in spec.entrypoint:
            config += ["--config.entrypoint", arg]
        _run("umoci", "config", "--image", f"{layout}:{tag}", *config)
        _run("umoci", "gc", "--layout", str(layout))
        # umoci tags cannot hold a full reference; containerd's importer names the image from this one.
        index_path = layout / "index.json"
        index = json.loads(index_path.read_text())
        for manifest in index["manifests"]:
            manifest.setdefault("annotations", {})["io.containerd.image.name"] = spec.ref
        index_path.write_text(json.dumps(index))
        partial = t / "image.tar"
        _run("tar", "-C", str(layout), "-cf", str(partial), ".")
        os.replace(partial, archive)
    return archive


def import_archive(ctr: list[str], archive: Path) -> None:
    """``ctr -n k8s.io images import``: the CRI plugin sees the image at once (no pull needed)."""
    _run(*ctr, "-n", "k8s.io", "images", "import", str(archive))


class OperatorImage(NamedTuple):
    ref: str  # normalized, as containerd names it after import: docker.io/library/dittofs-operator:<appVersion>
    archive: Path  # OCI archive for import_archive()


def operator_image(stderr_tail: int = 40) -> OperatorImage:
    """The operator's image, built from the repository's Dockerfile (cached until a context file changes).

    Runs ``build.sh operator-image`` (root, buildah), streaming its progress to stderr: about 30 s cold (plus
    about 40 s once for the base image; the builder stage's pip reaches the package index with the host's
    pip configuration), well under a second when cached. The ref is read back from the archive's OCI index,
    so it is exactly the name ``ctr images import`` gives the image: ``import_archive(node.ctr, archive)``.
    """
    argv = ["bash", str(BUILD_SH), "operator-image"]
    tail: deque[str] = deque(maxlen=stderr_tail)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=build_env()) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stderr:  # the script writes nothing but the archive path to stdout
            sys.stderr.write(line)
            tail.append(line)
        out = proc.stdout.read()
        code = proc.wait()
    if code != 0:
        raise ImageBuildError(f"{' '.join(argv)} exited {code}: {''.join(tail).strip()}")
    lines = out.strip().splitlines()
    archive = Path(lines[-1]) if lines else Path()
    if not archive.is_absolute() or not archive.is_file():
        raise ImageBuildError(f"{' '.join(argv)} printed no archive path (stdout: {out.strip()!r})")
    return OperatorImage(normalize_ref(_oci_ref_name(archive)), archive)


def _oci_ref_name(archive: Path) -> str:
    """``org.opencontainers.image.ref.name`` of the archive's (single) image."""
    try:
        with tarfile.open(archive) as tar:
            member = tar.extractfile("index.json")
            index = json.load(member) if member is not None else {}
    except (OSError, KeyError, tarfile.TarError, ValueError) as exc:
        raise ImageBuildError(f"{archive}: no readable index.json: {exc}") from exc
    names = {m.get("annotations", {}).get("org.opencontainers.image.ref.name") for m in index.get("manifests", [])}
    names.discard(None)
    if len(names) != 1:
        raise ImageBuildError(f"{archive}: expected one org.opencontainers.image.ref.name, found {sorted(names)}")
    return str(names.pop())
