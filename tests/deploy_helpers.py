"""Helpers for the real-deployment test: certificates, node keys, ports and process bookkeeping.

Everything binds to 127.0.0.1, every process is started in its own session (process group) and
stopped by ``Deployment.stop_all`` together with every descendant it spawned (flower-superexec,
flower-serverapp, flwr-clientapp), and every wait is bounded.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

LOOPBACK = "127.0.0.1"
BIN = Path(sys.executable).parent
LOCAL_SUPERLINK_PORT = 39091  # the SuperLink `flwr run` starts for a ":local:" connection


def flwr_env(flwr_home: Path) -> dict[str, str]:
    """The environment for every Flower process: isolated FLWR_HOME, no telemetry, no update
    check, no runtime dependency installation (which would download torch)."""
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(flwr_home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        PYTHONUNBUFFERED="1",
    )
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_port(port: int, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    """Block until something accepts on 127.0.0.1:``port`` (bounded; fails fast if ``proc``
    exits)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listening on {LOOPBACK}:{port} after {timeout_s:.0f} s")


# -- TLS test certificates ----------------------------------------------------------------------
def make_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for localhost / 127.0.0.1 signed by it.
    Returns (ca.crt, server.pem, server.key); the same as the openssl commands in
    docs/deployment.md."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedenergy-test-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = (
        directory / "ca.crt",
        directory / "server.pem",
        directory / "server.key",
    )
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


def make_node_key(path: Path) -> tuple[Path, Path]:
    """An unencrypted ECDSA P-384 key pair in OpenSSH format, as
    ``ssh-keygen -t ecdsa -b 384 -N "" -f PATH`` makes it. Returns (private, public)."""
    key = ec.generate_private_key(ec.SECP384R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    pub = path.with_name(path.name + ".pub")
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + f" {path.name}\n".encode()
    )
    return path, pub


# -- processes ----------------------------------------------------------------------------------
@dataclass
class Started:
    name: str
    proc: subprocess.Popen
    log: Path
    descendants: set[int] = field(default_factory=set)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Deployment:
    """Book-keeping for the processes one test starts; ``stop_all`` ends them all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "flwr-home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs = root / "logs"
        self.logs.mkdir(exist_ok=True)
        self.env = flwr_env(self.home)
        self.started: list[Started] = []

    def start(self, name: str, argv: list[str]) -> Started:
        log = self.logs / f"{name}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                argv,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.root,
                start_new_session=True,
            )
        s = Started(name, proc, log)
        self.started.append(s)
        return s

    def cli(self, args: list[str], timeout_s: float = 60, cwd: Path | None = None) -> str:
        """Run ``flwr ARGS`` to completion (bounded); return stdout; raise with the output on a
        non-zero exit."""
        res = subprocess.run(
            [str(BIN / "flwr"), *args],
            env=self.env,
            cwd=cwd or self.root,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
        if res.returncode != 0:
            raise RuntimeError(
                f"flwr {' '.join(args)} -> {res.returncode}\n{res.stdout}\n{res.stderr}"
            )
        return res.stdout

    def cli_json(self, args: list[str], timeout_s: float = 60) -> dict:
        out = self.cli([*args, "--format", "json"], timeout_s)
        return json.loads(out[out.index("{") :])

    def track(self) -> None:
        """Remember every current descendant of every started process (they may be re-parented
        to init once their parent dies, so they are collected while the parent lives)."""
        for s in self.started:
            try:
                kids = psutil.Process(s.proc.pid).children(recursive=True)
            except psutil.Error:
                continue
            s.descendants.update(k.pid for k in kids)

    def kill(self, s: Started) -> None:
        """SIGKILL one started process (not its children: they are what a crash leaves)."""
        self.track()
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait(timeout=10)

    def stop_all(self, grace_s: float = 5.0) -> list[str]:
        """Stop every started process, its process group and every descendant seen; also the
        local SuperLink a `flwr run` of this FLWR_HOME may have left. Returns what was left
        running after SIGTERM (for the test to report)."""
        self.track()
        victims: dict[int, psutil.Process] = {}
        for s in self.started:
            for pid in {s.proc.pid, *s.descendants}:
                try:
                    victims[pid] = psutil.Process(pid)
                except psutil.Error:
                    pass
            try:
                os.killpg(s.proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        for p in self._local_superlinks():
            victims[p.pid] = p
        for p in victims.values():
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(list(victims.values()), timeout=grace_s)
        stubborn = [f"{p.pid} {p.name()}" for p in alive if p.is_running()]
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=grace_s)
        for s in self.started:
            try:
                os.killpg(s.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                s.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        return stubborn

    def listeners(self) -> list[tuple[str, int]]:
        """(address, port) of every listening TCP socket of the started processes and their
        descendants, right now."""
        self.track()
        pids = {s.proc.pid for s in self.started} | {p for s in self.started for p in s.descendants}
        return sorted(
            (c.laddr.ip, c.laddr.port)
            for c in psutil.net_connections(kind="inet")
            if c.pid in pids and c.status == psutil.CONN_LISTEN
        )

    def _local_superlinks(self) -> list[psutil.Process]:
        """Processes started by `flwr run` with this FLWR_HOME (a detached local SuperLink and
        its superexec), found by their environment."""
        found = []
        me = os.getpid()
        for p in psutil.process_iter(["pid", "name"]):
            if p.pid == me:
                continue
            try:
                if p.environ().get("FLWR_HOME") == str(self.home):
                    found.append(p)
            except psutil.Error:
                continue
        return found

    def leftovers(self) -> list[str]:
        """Processes of this deployment still alive (should be none after stop_all)."""
        left = []
        for s in self.started:
            for pid in {s.proc.pid, *s.descendants}:
                try:
                    p = psutil.Process(pid)
                    if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                        left.append(f"{pid} {p.name()}")
                except psutil.Error:
                    pass
        left += [f"{p.pid} {p.name()}" for p in self._local_superlinks()]
        return left


PROJECT_PARTS = (
    "pyproject.toml",
    "LICENSE",
    "README.md",
    "fedenergy",
    "server",
    "client",
    "simulations/fleets",  # the ServerApp looks fleets up in the app directory
)


def stage_project(src: Path, dst: Path) -> Path:
    """Copy what the Flower app needs (pyproject, LICENSE, the packages, the fleets) to ``dst``.

    ``flwr run DIR`` walks and resolves every file under DIR before filtering, .venv included
    (10-30 s on the 2-core CI machine); a staged copy holds only what the FAB contains."""
    import shutil

    dst.mkdir(parents=True, exist_ok=True)
    for part in PROJECT_PARTS:
        path = src / part
        if path.is_dir():
            shutil.copytree(path, dst / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dst / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst / part)
    return dst


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.5):
    """Poll ``predicate`` until it returns a truthy value (bounded); return that value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
