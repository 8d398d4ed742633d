"""MiniStack in a process group of its own: TLS on, IAM enforcement on, one loopback port.

TLS is not decoration: the template's bucket and queue policies deny every request that is not
over TLS (`aws:SecureTransport`), as AWS evaluates them, and MiniStack evaluates them too. The
emulator serves a certificate made here for 127.0.0.1, and its Lambda workers (local processes,
children of the emulator) are told to trust it, as they are the simulator that shares it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# The pinned emulator (the Makefile installs it into .venv-rehearse); workarounds.py names the
# version each gap was seen in, so a different one is refused rather than half-trusted.
MINISTACK_VERSION = "1.5.33"
REGION = "us-east-1"
ACCOUNT_ID = "000000000000"  # MiniStack's default account; "test" keys are that account's root
START_TIMEOUT = 60.0
SERVER_SCRIPT = Path(__file__).with_name("ministack_server.py")


class EmulatorError(Exception):
    pass


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def make_certificate(folder: Path) -> Certificate:
    """A self-signed leaf for 127.0.0.1 and localhost, valid two days (one rehearsal needs minutes)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    command += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
    for extension in (
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=serverAuth",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ):
        command += ["-addext", extension]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)  # noqa: S603 - openssl, our arguments
    except (OSError, subprocess.CalledProcessError) as exc:
        raise EmulatorError(f"openssl could not make the rehearsal's certificate: {exc}") from None
    return Certificate(cert, key)


def client_environment(endpoint: str, certificate: Certificate) -> dict[str, str]:
    """What an AWS client (boto3, the SAM CLI) needs to talk to the emulator as the account's root."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_CA_BUNDLE": str(certificate.cert),
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }


class MiniStack:
    """One MiniStack server; `stop` ends it and every Lambda worker it started (its process group)."""

    def __init__(self, python: Path, folder: Path, certificate: Certificate, port: int) -> None:
        self.python, self.folder, self.certificate, self.port = python, folder, certificate, port
        self.endpoint = f"https://127.0.0.1:{port}"
        self.log_path = folder / "ministack.log"
        self._process: subprocess.Popen[bytes] | None = None

    def check_version(self) -> None:
        probe = "import importlib.metadata as m; print(m.version('ministack'))"
        try:
            found = subprocess.run(  # noqa: S603 - the pinned emulator's interpreter
                [str(self.python), "-c", probe], capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            raise EmulatorError(f"no MiniStack beside {self.python} ({exc}); run `make rehearse`") from None
        if found.stdout.strip() != MINISTACK_VERSION:
            raise EmulatorError(
                f"MiniStack {found.stdout.strip()} found, the rehearsal is written for {MINISTACK_VERSION}: "
                "its workarounds (rehearsal/workarounds.py) name the version they were seen in; check them first"
            )

    def environment(self) -> dict[str, str]:
        # Nothing of the caller's AWS set-up reaches the emulator: its Lambda workers inherit its
        # environment, and must get their endpoint and role credentials from the emulator alone.
        own = ("AWS_", "REQUESTS_CA", "CURL_CA", "SSL_CERT")
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(own)}
        scratch = self.folder / "tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        return {
            **inherited,
            "GATEWAY_PORT": str(self.port),
            "BIND_HOST": "127.0.0.1",
            "AUTH": "true",  # IAM policies enforced: each function gets exactly its role's statements
            "USE_SSL": "1",  # workers are pointed at https and told to trust the certificate
            "MINISTACK_SSL_CERT": str(self.certificate.cert),
            "MINISTACK_SSL_KEY": str(self.certificate.key),
            "MINISTACK_REGION": REGION,
            "TMPDIR": str(scratch),  # the workers' unpacked code and layers go here, removed with it
            "S3_DATA_DIR": str(self.folder / "s3"),
        }

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self.check_version()
        # hypercorn directly, as `ministack -d` runs it: `ministack` in the foreground also binds
        # port 443 whenever it is free, which a rehearsal must not take from the machine. Through
        # ministack_server.py, which logs each denial (workarounds.DENIALS_LOGGED).
        command = [str(self.python), str(SERVER_SCRIPT), "ministack.app:app"]
        # --workers 0: served in this process, as `ministack` serves (hypercorn's default spawns a
        # fresh interpreter per worker, which would lose ministack_server.py's denial log).
        command += ["--bind", f"127.0.0.1:{self.port}", "--keep-alive", "75", "--workers", "0"]
        command += ["--certfile", str(self.certificate.cert), "--keyfile", str(self.certificate.key)]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 - the pinned emulator's interpreter
                command, env=self.environment(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmulatorError(f"MiniStack exited with {self._process.returncode}; see {self.log_path}")
            if self._healthy():
                return
            time.sleep(0.3)
        raise EmulatorError(f"MiniStack did not answer on {self.endpoint} within {timeout:.0f}s; see {self.log_path}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"{self.endpoint}/_ministack/health", timeout=2, context=self.certificate.context()
            ) as answer:
                return bool(json.load(answer).get("services"))
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            self._end(process)
        finally:
            # Each Lambda worker unpacked its code and the layer here: about a gigabyte a rehearsal.
            shutil.rmtree(self.folder / "tmp", ignore_errors=True)

    @staticmethod
    def _end(process: subprocess.Popen[bytes]) -> None:
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)  # the group this process leads: the server and its workers
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=wait)
                # Workers may outlive the server by a moment: end the rest of the group too.
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
            break
