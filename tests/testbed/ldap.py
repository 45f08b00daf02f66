"""A real OpenLDAP `slapd` (Debian's package), for the identity-provider tests (contract and real node).

One empty `dc=example,dc=com` database whose root DN binds with ``password``: enough for DittoFS's own
"dial + bind" check. With ``tls`` it offers StartTLS on its ldap:// port with that certificate.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from certs.selfsigned import KeyPair
from tests.support.net import free_port
from tests.support.process import stop_process

SLAPD = "/usr/sbin/slapd"
SCHEMA = Path("/etc/ldap/schema/core.schema")
BASE_DN = "dc=example,dc=com"
ROOT_DN = f"cn=admin,{BASE_DN}"


class SlapdUnavailable(RuntimeError):
    """slapd is not installed (`make bootstrap` installs Debian's `slapd`)."""


def slapd_binary() -> str:
    if not Path(SLAPD).exists() or not SCHEMA.exists():
        raise SlapdUnavailable(f"{SLAPD} or {SCHEMA} missing: apt-get install slapd (scripts/bootstrap.sh)")
    return SLAPD


class Slapd:
    def __init__(self, workdir: Path, password: str, tls: KeyPair | None = None, host: str = "127.0.0.1") -> None:
        """``host``: where it listens (the real node's pods reach the host only on the bridge address)."""
        slapd_binary()
        self.workdir, self.password, self.tls, self.host = workdir, password, tls, host
        self.port = free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    def _config(self) -> Path:
        lines = [f"include {SCHEMA}", f"pidfile {self.workdir}/slapd.pid", "modulepath /usr/lib/ldap",
                 "moduleload back_mdb"]
        if self.tls is not None:
            (self.workdir / "tls.crt").write_bytes(self.tls.cert_pem)
            (self.workdir / "tls.key").write_bytes(self.tls.key_pem)
            lines += [f"TLSCertificateFile {self.workdir}/tls.crt", f"TLSCertificateKeyFile {self.workdir}/tls.key"]
        db = self.workdir / "db"
        db.mkdir(exist_ok=True)
        lines += ["database mdb", "maxsize 10485760", f'suffix "{BASE_DN}"', f'rootdn "{ROOT_DN}"',
                  f"rootpw {self.password}", f"directory {db}"]
        path = self.workdir / "slapd.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> Slapd:
        log = (self.workdir / "slapd.log").open("ab")
        # -d 0: stay in the foreground (so the test owns the process), log nothing extra.
        self.proc = subprocess.Popen([SLAPD, "-f", str(self._config()), "-h", f"{self.url}/", "-d", "0"],
                                     stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited {self.proc.returncode}: {self.log_text()[-2000:]}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"slapd did not listen on {self.port} within 15 s: {self.log_text()[-2000:]}")

    def restart(self, password: str) -> None:
        """A password rotation on the directory side (slapd reads rootpw only at start)."""
        self.stop()
        self.password = password
        self.start()

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def log_text(self) -> str:
        path = self.workdir / "slapd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> Slapd:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def keytab(path: Path, principal: str, password: str) -> bytes:
    """A real keytab written by MIT `ktutil` (Debian's krb5-user) for ``principal``; no KDC needed."""
    ktutil = shutil.which("ktutil")
    if ktutil is None:
        raise SlapdUnavailable("ktutil missing: apt-get install krb5-user (scripts/bootstrap.sh)")
    script = f"addent -password -p {principal} -k 1 -e aes256-cts-hmac-sha1-96\n{password}\nwkt {path}\nquit\n"
    subprocess.run([ktutil], input=script.encode(), check=True, capture_output=True, timeout=30)
    return path.read_bytes()
