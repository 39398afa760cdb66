"""Helpers of the engine tests: tiny ONNX models, the trtexec stand-in, a loopback sshd.

Everything here is test infrastructure. The stand-in (tests/standin/trtexec) is NOT TensorRT;
the sshd listens on 127.0.0.1 only and uses throwaway keys made in a temp dir.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
STANDIN = TESTS / "standin" / "trtexec"
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


# ---------------------------------------------------------------- tiny ONNX models


def tiny_patched_onnx(
    path: Path, size: int = 32, batch: int | str = "batch", seed: int = 0
) -> Path:
    """What a patched ONNX looks like to the engine stage: images [B,3,S,S] -> output0 [B,N,8]."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "conv.w")
    b = numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "conv.b")
    shape = numpy_helper.from_array(np.array([0, -1, 8], dtype=np.int64), "reshape.shape")
    nodes = [
        helper.make_node("Conv", ["images", "conv.w", "conv.b"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("Sigmoid", ["c"], ["s"], name="act/sigmoid"),
        helper.make_node("Mul", ["c", "s"], ["m"], name="act/mul"),
        helper.make_node("Transpose", ["m"], ["t"], name="to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["t", "reshape.shape"], ["output0"], name="flatten"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, size * size, 8])],
        [w, b, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def seed_patched(workdir: Path, model: str, imgsz: int) -> Path:
    """Pre-seed results/patched/<model>/<imgsz>/model.onnx and its manifest."""
    onnx_path = tiny_patched_onnx(workdir / f"results/patched/{model}/{imgsz}/model.onnx", imgsz)
    manifest = {
        "stage": "patch_onnx",
        "artifact": str(onnx_path),
        "seeded_by": "tests",
        "options": {"batch": "dynamic", "image_size": imgsz},
    }
    Path(f"{onnx_path}.manifest.json").write_text(json.dumps(manifest))
    return onnx_path


# ---------------------------------------------------------------- the trtexec stand-in


def make_trtexec(
    directory: Path,
    version: str,
    *,
    device: str = "STAND-IN GPU",
    fail: str | None = None,
    name: str = "trtexec",
) -> Path:
    """A wrapper that runs the TEST STAND-IN as trtexec of TensorRT ``version``.

    The environment is set inside the wrapper so it also holds over ssh (sshd passes none).
    """
    directory.mkdir(parents=True, exist_ok=True)
    env = {"TRTFLOW_STANDIN_TRT": version, "TRTFLOW_STANDIN_DEVICE": device}
    if fail:
        env["TRTFLOW_STANDIN_FAIL"] = fail
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    wrapper = directory / name
    wrapper.write_text(
        "#!/bin/sh\n# TEST STAND-IN wrapper (tests/standin/trtexec), not TensorRT\n"
        f'{exports} exec {shlex.quote(sys.executable)} {shlex.quote(str(STANDIN))} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


# ---------------------------------------------------------------- loopback sshd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@dataclass
class Sshd:
    port: int
    user: str
    ssh_config: Path  # client config with the authorised throwaway key
    wrong_key_config: Path  # client config with a key sshd does not accept
    proc: subprocess.Popen[bytes]
    log: Path

    def target(self, trtexec: Path, tensorrt: str, workdir: Path, **extra: object) -> dict:
        return {
            "transport": "ssh",
            "host": "127.0.0.1",
            "user": self.user,
            "port": self.port,
            "ssh_config": str(self.ssh_config),
            "workdir": str(workdir),
            "trtexec": str(trtexec),
            "tensorrt": tensorrt,
            "device": "STAND-IN GPU",
            "precisions": ["fp32", "fp16"],
            "connect_timeout": 5,
            **extra,
        }


def sshd_unavailable() -> str | None:
    if not Path(SSHD).is_file():
        return "sshd is not installed (apt-get install openssh-server)"
    if not shutil.which("ssh-keygen") or not shutil.which("ssh"):
        return "the ssh client is not installed (apt-get install openssh-client)"
    return None


def start_sshd(base: Path) -> Sshd:
    """Start sshd on 127.0.0.1:<free port> with throwaway host and client keys."""
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    user = (
        os.environ.get("USER")
        or subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    )
    host_key = keygen(base / "host_ed25519")
    client_key = keygen(base / "client_ed25519")
    wrong_key = keygen(base / "wrong_ed25519")
    authorized = base / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    authorized.chmod(0o600)
    port = free_port()
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
    config = base / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {authorized}\nPidFile {base / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
        f"AllowUsers {user}\nLogLevel VERBOSE\n"
    )
    log = base / "sshd.log"
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)], stdout=open(log, "wb"), stderr=subprocess.STDOUT
    )
    known = base / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {Path(f'{host_key}.pub').read_text()}")
    configs = []
    for name, key in (("ssh_config", client_key), ("ssh_config_wrong", wrong_key)):
        cfg = base / name
        cfg.write_text(
            "Host *\n"
            f"  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n"
            "  StrictHostKeyChecking yes\n  PasswordAuthentication no\n  LogLevel ERROR\n"
        )
        configs.append(cfg)
    deadline = time.time() + 15
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        proc.terminate()
        raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port}: {log.read_text()}")
    return Sshd(port, user, configs[0], configs[1], proc, log)


def stop_sshd(sshd: Sshd) -> None:
    sshd.proc.terminate()
    try:
        sshd.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        sshd.proc.kill()
