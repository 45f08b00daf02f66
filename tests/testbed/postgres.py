"""A throw-away PostgreSQL cluster on 127.0.0.1 for contract tests (Debian ``postgresql`` package).

``initdb`` refuses to run as root, so as root every server command runs as the ``postgres`` system user
(created by the Debian package) through ``runuser``; as any other user it runs directly. The cluster lives
in its own ``mkdtemp`` directory under the system temp dir (pytest's ``tmp_path`` is 0700 root, which the
``postgres`` user cannot traverse), listens on a free loopback port with its Unix socket in that
directory, uses scram-sha-256 for TCP and is deleted on ``stop``. Install: see
``tests/testbed/README-postgres.txt``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from tests.support.net import free_port


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


def postgres_bindir() -> Path:
    """``$POSTGRES_BINDIR``, else the newest ``/usr/lib/postgresql/<major>/bin`` that has ``initdb``."""
    explicit = os.environ.get("POSTGRES_BINDIR")
    if explicit:
        return Path(explicit)
    candidates = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").is_file()),
        key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0),
    )
    if candidates:
        return candidates[-1]
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PostgresUnavailable(
        "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb); "
        "see tests/testbed/README-postgres.txt"
    )


class PostgresServer:
    """``initdb`` + ``pg_ctl start`` on ``127.0.0.1:<free port>``; a database and password user for tests."""

    def __init__(self, database: str = "dittofs", user: str = "dittofs", password: str | None = None,
                 *, ssl: bool = False) -> None:
        self.ssl = ssl
        self.database = database
        self.user = user
        self.password = password or secrets.token_hex(16)
        self.host = "127.0.0.1"
        self.port = 0
        self.bindir = postgres_bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="dittofs-pg-"))
        self.datadir = self.dir / "data"
        self.logfile = self.dir / "postgres.log"
        self._run_as: str | None = None
        self._running = False
        if os.geteuid() == 0:
            self._run_as = "postgres"
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)

    def _cmd(self, *args: str) -> list[str]:
        exe = [str(self.bindir / args[0]), *args[1:]]
        return ["runuser", "-u", self._run_as, "--", *exe] if self._run_as else exe

    def _run(self, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self._cmd(*args),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.dir,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
                f"{self.log_text()[-3000:]}"
            )
        return proc

    def log_text(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except (FileNotFoundError, PermissionError):
            return ""

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.cleanup()  # __exit__ does not run when __enter__ fails: do not leak the mkdtemp dir
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def start(self) -> PostgresServer:
        """initdb (first time only), then start on a free port and create the test user and database."""
        first = not self.datadir.exists()
        if first:
            self._run(
                "initdb", "-D", str(self.datadir), "-U", "postgres", "--auth-local=trust",
                "--auth-host=scram-sha-256", "-E", "UTF8", "--no-instructions",
            )  # fmt: skip
        if self.port == 0:  # a restart keeps its port, so clients configured once still reach it
            self.port = free_port()
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses={self.host} -c fsync=off"
        if self.ssl:
            opts += f" -c ssl=on -c ssl_cert_file={self._tls_files()[0]} -c ssl_key_file={self._tls_files()[1]}"
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-o", opts, "-w", "-t", "60", "start")
        self._running = True
        if first:
            sql = (
                f"CREATE ROLE \"{self.user}\" LOGIN PASSWORD '{self.password}';\n"
                f'CREATE DATABASE "{self.database}" OWNER "{self.user}";\n'
            )
            self.psql(sql)
        return self

    def _tls_files(self) -> tuple[Path, Path]:
        """A self-signed serving pair for sslmode=require (which encrypts without verifying)."""
        cert, key = self.dir / "server.crt", self.dir / "server.key"
        if not cert.exists():
            from certs.selfsigned import new_ca, new_leaf

            pair = new_leaf(new_ca("testbed-postgres-ca"), ["localhost"], [self.host])
            cert.write_bytes(pair.cert_pem)
            key.write_bytes(pair.key_pem)
            os.chmod(key, 0o600)
            if self._run_as:
                pw = pwd.getpwnam(self._run_as)
                for path in (cert, key):
                    os.chown(path, pw.pw_uid, pw.pw_gid)
        return cert, key

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the Unix socket."""
        out = self._run(
            "psql", "-v", "ON_ERROR_STOP=1", "-h", str(self.dir), "-p", str(self.port), "-U", "postgres",
            "-d", database, "-X", "-q", "-t", "-f", "-", input_text=sql,
        )  # fmt: skip
        return out.stdout

    def stop(self) -> None:
        """Stop the server (fast shutdown); the data directory stays so ``start`` can resume it."""
        if self._running:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "60", "stop")
            self._running = False

    def cleanup(self) -> None:
        """Stop the server and delete its directory."""
        with contextlib.suppress(RuntimeError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def dittofs_env(self, sslmode: str = "disable") -> dict[str, str]:
        """The ``DITTOFS_DATABASE_POSTGRES_*`` variables SPEC §4.3 gives the server container."""
        return {
            "DITTOFS_DATABASE_POSTGRES_HOST": self.host,
            "DITTOFS_DATABASE_POSTGRES_PORT": str(self.port),
            "DITTOFS_DATABASE_POSTGRES_DATABASE": self.database,
            "DITTOFS_DATABASE_POSTGRES_USER": self.user,
            "DITTOFS_DATABASE_POSTGRES_PASSWORD": self.password,
            "DITTOFS_DATABASE_POSTGRES_SSLMODE": sslmode,
        }
