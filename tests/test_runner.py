"""The runner: every failure becomes one line on stderr and in the job log, with its cause."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

CASES = {
    "trtflow": ("raise TrtflowError('model x is bad', 'use y')", "model x is bad — fix: use y",
                False),
    "value": ("raise ValueError('Got invalid dimensions for input: x:0\\nmore')",
              "ValueError: Got invalid dimensions for input: x:0 — fix: see the traceback", True),
    "disk full": ("raise OSError(errno.ENOSPC, 'No space left on device', '/r/model.onnx')",
                  "disk full: writing /r/model.onnx failed (No space left on device); the "
                  "filesystem of / has ", True),
    # the kernel's own ENOSPC (/dev/full), no filename: atomic_path names the artifact
    "disk full, atomic": ("with atomic_path(ART) as tmp:\n        tmp.write_bytes(b'x' * 3000000)"
                          "\n        open('/dev/full', 'wb', buffering=0).write(b'x')",
                          "disk full: writing ART failed (No space left on device, after 3.0 MB "
                          "of it); the filesystem of DIR has ", True),
    # TensorFlow's C++ writers: the path is in the message (here inside atomic_path's temporary)
    "disk full, tensorflow": ("import tensorflow as tf\n    raise tf.errors.ResourceExhaustedError("
                              "None, None, '{{function_node SaveV2}} /r/.sm.tmp-1/variables/v.data;"
                              " No space left on device [Op:SaveV2]')",
                              "disk full: writing /r/sm failed (No space left on device); the "
                              "filesystem of / has ", True),
    "not a dir": ("raise NotADirectoryError(errno.ENOTDIR, 'Not a directory', 'results/pb')",
                  "Not a directory (results/pb) — fix: a part of the path is a file", True),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("debug", [False, True])
def test_any_failure_is_one_line_with_the_cause_in_the_log(tmp_path, case, debug):
    body, line, traced = CASES[case]
    art = tmp_path / "results" / "model.onnx"
    body = body.replace("ART", repr(str(art)))
    line = line.replace("ART", str(art)).replace("DIR", str(art.parent))
    log = tmp_path / "logs" / "stage.log"
    code = (
        "import errno\nfrom trtflow.core.errors import TrtflowError\n"
        "from trtflow.core.manifest import atomic_path\nfrom trtflow.core.runner import run_stage\n"
        f"def stage():\n    {body}\n"
        f"run_stage(stage, {str(log)!r}, debug={debug})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if " ERROR " in ln]
    assert len(errors) == (2 if traced and debug else 1), proc.stderr
    assert line in errors[0]
    text = log.read_text()
    assert line in text
    assert ("Traceback (most recent call last)" in text) is traced
    assert ("Traceback (most recent call last)" in proc.stderr) is (traced and debug)
    if art.parent.exists():
        assert not list(art.parent.iterdir())  # no partial artifact


def test_stale_temporaries_of_killed_jobs_are_removed(tmp_path):
    import os

    from trtflow.core.manifest import atomic_path

    final = tmp_path / "saved_model" / "320"
    final.parent.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    stale = final.with_name(f".320.tmp-{dead}")
    stale.mkdir()
    (stale / "half-written.pb").write_bytes(b"x")
    live = final.with_name(f".320.tmp-{os.getppid()}")  # a running process's temp stays
    live.mkdir()
    with atomic_path(final, is_dir=True) as tmp:
        tmp.mkdir()
        (tmp / "saved_model.pb").write_bytes(b"ok")
    assert (final / "saved_model.pb").read_bytes() == b"ok"
    assert not stale.exists() and live.exists()
    with pytest.raises(ValueError), atomic_path(tmp_path / "x.json") as tmp:
        tmp.write_text("half")
        raise ValueError("disk went away")
    assert not list(tmp_path.glob(".x.json.tmp-*")) and not (tmp_path / "x.json").exists()


def test_fix_names_the_jobs_model(tmp_path):
    code = (
        "from trtflow.core.errors import TrtflowError\nfrom trtflow.core.runner import run_stage\n"
        "def stage():\n    raise TrtflowError('a classifier', 'point models.<name>.path at one')\n"
        f"run_stage(stage, {str(tmp_path / 'j.log')!r}, model='my-yolo')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1
    assert "fix: point models.my-yolo.path at one" in proc.stderr
    assert "models.<name>" not in (tmp_path / "j.log").read_text()
