"""How a command reaches a target: on this host (local) or on a device over SSH.

Both transports run argv lists (never ``shell=True``), give a per-job work directory on the
target, put files there, and fetch results back atomically (a temporary name, renamed at the
end), so a failed transfer never leaves a half-copied engine. Over SSH only ``ssh`` itself is
used (``cat`` streams for files): the device needs a POSIX shell and trtexec, no Python, no
scp/sftp server. Keys and passwords never appear here: ssh reads them from the user's ssh
config (``~/.ssh/config`` or the target's ``ssh_config`` file) or the agent.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtflow.core.errors import TrtflowError
from trtflow.core.manifest import atomic_path, command_line

log = logging.getLogger(__name__)


@dataclass
class Result:
    argv: list[str]
    returncode: int
    output: str  # stdout and stderr, interleaved as the device wrote them


class Transport:
    """Interface: run argv in a work dir on the target, move files in and out."""

    name: str
    target: str

    def workdir(self, label: str) -> str:
        raise NotImplementedError

    def run(self, argv: list[str], cwd: str, timeout: float | None = None) -> Result:
        raise NotImplementedError

    def put(self, local: str | Path, remote: str) -> None:
        raise NotImplementedError

    def get(self, remote: str, local: str | Path) -> None:
        """Fetch ``remote`` to ``local`` atomically (temp name, then rename)."""
        raise NotImplementedError

    def exists(self, remote: str) -> bool:
        raise NotImplementedError

    def cleanup(self, remote_dir: str) -> None:
        raise NotImplementedError

    def describe(self, argv: list[str], cwd: str) -> list[str]:
        """The command a user would type to reproduce ``argv`` from this host."""
        return argv


@dataclass
class LocalTransport(Transport):
    target: str
    env: dict[str, str] = field(default_factory=dict)
    name: str = "local"

    def workdir(self, label: str) -> str:
        return tempfile.mkdtemp(prefix=f"trtflow-{label}-")

    def run(self, argv: list[str], cwd: str, timeout: float | None = None) -> Result:
        log.info("[%s] $ %s", self.target, command_line(argv))
        try:
            proc = subprocess.run(
                argv,
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                timeout=timeout,
                env={**os.environ, **self.env},
                check=False,
            )
        except FileNotFoundError as exc:
            raise TrtflowError(
                f"target {self.target!r}: {argv[0]} not found on this host ({exc.strerror})",
                f"install TensorRT here and set targets.{self.target}.trtexec to its trtexec, "
                "or configure an SSH device (transport: ssh) — see README 'TensorRT targets'",
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise TrtflowError(
                f"target {self.target!r}: {argv[0]} timed out after {timeout} s", None
            ) from exc
        return Result(list(argv), proc.returncode, proc.stdout or "")

    def put(self, local: str | Path, remote: str) -> None:
        shutil.copyfile(local, remote)

    def get(self, remote: str, local: str | Path) -> None:
        if not Path(remote).is_file():
            raise TrtflowError(f"target {self.target!r}: {remote} was not written", None)
        with atomic_path(local) as tmp:
            shutil.copyfile(remote, tmp)

    def exists(self, remote: str) -> bool:
        return Path(remote).is_file()

    def cleanup(self, remote_dir: str) -> None:
        shutil.rmtree(remote_dir, ignore_errors=True)


# ssh's own failures (exit code 255) and what to do about each
_SSH_FAILURES = (
    ("Connection refused", "is sshd running on the device and the port right?"),
    ("Connection timed out", "is the device on and reachable from this host?"),
    ("No route to host", "is the device on and reachable from this host?"),
    ("Could not resolve hostname", "check targets.<name>.host or your ssh config"),
    (
        "Permission denied",
        "set up key authentication for this user (ssh-copy-id) in your "
        "ssh config or agent; trtflow never stores keys or passwords",
    ),
    ("Host key verification failed", "connect once with ssh to accept the device's host key"),
    ("Network is unreachable", "is this host on the device's network?"),
)


@dataclass
class SshTransport(Transport):
    """Run on ``user@host`` over ssh (BatchMode: never prompts, fails instead)."""

    target: str
    host: str
    user: str | None = None
    port: int = 22
    base_workdir: str = "/tmp/trtflow"
    ssh_config: str | None = None
    connect_timeout: int = 10
    name: str = "ssh"

    def _ssh(self) -> list[str]:
        argv = ["ssh"]
        if self.ssh_config:
            argv += ["-F", str(self.ssh_config)]
        argv += [
            "-p",
            str(self.port),
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={self.connect_timeout}",
        ]
        argv.append(f"{self.user}@{self.host}" if self.user else self.host)
        return argv

    def _remote(
        self, command: str, *, stdin: Any = None, stdout: Any = None, timeout: float | None = None
    ) -> subprocess.CompletedProcess[Any]:
        argv = [*self._ssh(), command]
        log.debug("$ %s", command_line(argv))
        try:
            return subprocess.run(
                argv,
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=stdout if stdout is not None else subprocess.PIPE,
                stderr=subprocess.PIPE,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise TrtflowError(
                "the ssh client is not installed on this host",
                "install openssh-client (apt-get install openssh-client)",
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise TrtflowError(
                f"target {self.target!r}: ssh {self.host} timed out after {timeout} s", None
            ) from exc

    def _check_ssh(self, proc: subprocess.CompletedProcess[Any], doing: str) -> None:
        """Raise on ssh's own failure (rc 255) with ssh's message and a fix."""
        err = (
            proc.stderr.decode(errors="replace")
            if isinstance(proc.stderr, bytes)
            else (proc.stderr or "")
        )
        if proc.returncode == 255:
            msg = " ".join(err.strip().splitlines()[-2:]) or "ssh failed"
            fix = next((f for k, f in _SSH_FAILURES if k in err), "check the ssh connection")
            raise TrtflowError(
                f"target {self.target!r}: cannot {doing} on {self.host}:{self.port}: {msg}", fix
            )
        if proc.returncode != 0:
            raise TrtflowError(
                f"target {self.target!r}: {doing} on {self.host} failed (exit "
                f"{proc.returncode}): {err.strip()[-500:]}",
                f"check the device's disk space and targets.{self.target}.workdir",
            )

    def workdir(self, label: str) -> str:
        path = f"{self.base_workdir.rstrip('/')}/{label}-{uuid.uuid4().hex[:8]}"
        proc = self._remote(f"mkdir -p {shlex.quote(path)}", timeout=60)
        self._check_ssh(proc, "create the work dir")
        return path

    def run(self, argv: list[str], cwd: str, timeout: float | None = None) -> Result:
        command = f"cd {shlex.quote(cwd)} && {shlex.join(argv)}"
        log.info("[%s] %s$ %s", self.target, self.host, command)
        argv_ssh = [*self._ssh(), command]
        try:
            proc = subprocess.run(
                argv_ssh,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise TrtflowError(
                f"target {self.target!r}: timed out after {timeout} s", None
            ) from exc
        if proc.returncode == 255:
            fake = subprocess.CompletedProcess(argv_ssh, 255, None, proc.stdout)
            self._check_ssh(fake, f"run {argv[0]}")
        if proc.returncode == 127:
            raise TrtflowError(
                f"target {self.target!r}: {argv[0]} not found on {self.host}: "
                f"{(proc.stdout or '').strip()[-300:]}",
                f"set targets.{self.target}.trtexec to trtexec's path on the device "
                "(JetPack: /usr/src/tensorrt/bin/trtexec)",
            )
        return Result(argv_ssh, proc.returncode, proc.stdout or "")

    def put(self, local: str | Path, remote: str) -> None:
        with open(local, "rb") as fh:
            proc = self._remote(f"cat > {shlex.quote(remote)}", stdin=fh, timeout=3600)
        self._check_ssh(proc, f"copy {Path(local).name} to the device")

    def get(self, remote: str, local: str | Path) -> None:
        with atomic_path(local) as tmp:
            with open(tmp, "wb") as fh:
                proc = self._remote(f"cat {shlex.quote(remote)}", stdout=fh, timeout=3600)
            self._check_ssh(proc, f"fetch {remote}")

    def exists(self, remote: str) -> bool:
        proc = self._remote(f"test -f {shlex.quote(remote)}", timeout=60)
        if proc.returncode == 255:
            self._check_ssh(proc, "reach the device")
        return proc.returncode == 0

    def cleanup(self, remote_dir: str) -> None:
        if not remote_dir.startswith(self.base_workdir.rstrip("/") + "/"):
            raise AssertionError(f"refusing to remove {remote_dir}")
        proc = self._remote(f"rm -rf {shlex.quote(remote_dir)}", timeout=120)
        if proc.returncode != 0:
            log.warning("[%s] could not remove %s on the device", self.target, remote_dir)

    def describe(self, argv: list[str], cwd: str) -> list[str]:
        return [*self._ssh(), f"cd {shlex.quote(cwd)} && {shlex.join(argv)}"]


def make_transport(name: str, spec: dict[str, Any]) -> Transport:
    """The transport of target ``name`` from its config entry."""
    if spec.get("transport", "local") == "ssh":
        if not spec.get("host"):
            raise TrtflowError(
                f"target {name!r} has transport ssh but no host",
                f"set targets.{name}.host (and user, port)",
            )
        return SshTransport(
            target=name,
            host=spec["host"],
            user=spec.get("user"),
            port=int(spec.get("port") or 22),
            base_workdir=spec.get("workdir") or "/tmp/trtflow",
            ssh_config=spec.get("ssh_config"),
            connect_timeout=int(spec.get("connect_timeout", 10)),
        )
    return LocalTransport(target=name)
