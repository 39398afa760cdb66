"""Engine stage over SSH, for real: a loopback sshd (127.0.0.1, throwaway keys) as the device,
the trtexec TEST STAND-IN as its trtexec (TensorRT 8.2 flags, like a Jetson Nano)."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_support import (
    free_port,
    make_trtexec,
    sshd_unavailable,
    start_sshd,
    stop_sshd,
    tiny_patched_onnx,
)

from trtflow.core.errors import TrtflowError
from trtflow.stages.engine import benchmark_engine, build_engine, check_engine_parity
from trtflow.trt.transport import SshTransport

pytestmark = pytest.mark.skipif(
    sshd_unavailable() is not None, reason=f"no loopback sshd: {sshd_unavailable()}"
)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    stop_sshd(server)


@pytest.fixture
def device(tmp_path, sshd):
    """An ssh target (TensorRT 8.2.1 stand-in) and a tiny patched ONNX."""
    onnx_path = tiny_patched_onnx(tmp_path / "model.onnx")
    remote = tmp_path / "device-workdir"
    spec = sshd.target(make_trtexec(tmp_path / "device-bin", "8.2.1"), "8.2.1", remote)
    return spec, onnx_path, remote


def test_transport_put_get_run(tmp_path, sshd):
    t = SshTransport(
        target="t",
        host="127.0.0.1",
        user=sshd.user,
        port=sshd.port,
        base_workdir=str(tmp_path / "wd"),
        ssh_config=str(sshd.ssh_config),
    )
    wd = t.workdir("x y")  # odd characters are quoted, never interpreted by a shell
    src = tmp_path / "blob.bin"
    src.write_bytes(bytes(range(256)) * 1000)
    t.put(src, f"{wd}/in.bin")
    r = t.run(["sh", "-c", "cp in.bin 'out file.bin'; echo done $0", "a'b"], wd)
    assert r.returncode == 0 and "done a'b" in r.output
    t.get(f"{wd}/out file.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    with pytest.raises(TrtflowError, match="fetch"):
        t.get(f"{wd}/missing", tmp_path / "missing.bin")
    assert not (tmp_path / "missing.bin").exists() and not list(tmp_path.glob(".missing*"))
    t.cleanup(wd)
    assert not Path(wd).exists()


def test_build_benchmark_parity_over_ssh(tmp_path, device):
    spec, onnx_path, remote = device
    engine = tmp_path / "out" / "fp16" / "b1-2-4.engine"
    cache = tmp_path / "timing.cache"
    m = build_engine(
        onnx_path,
        engine,
        target="nano",
        spec=spec,
        precision="fp16",
        profile="b1-2-4",
        image_size=32,
        timing_cache=cache,
    )
    assert m["transport"] == "ssh" and m["standin"]
    assert m["tensorrt"] == {"declared": "8.2.1", "probed": "8.2.1"}
    assert m["device"]["probed"] == "STAND-IN GPU"
    device_line = " ".join(m["work_dir_command"])  # "command" is the trtflow line
    assert "--workspace=1024" in device_line and "--explicitBatch" in device_line
    assert m["work_dir_command"][0] == "ssh" and "127.0.0.1" in " ".join(m["work_dir_command"])
    assert cache.is_file()
    man = Path(f"{engine}.manifest.json")
    b = benchmark_engine(
        engine,
        man,
        tmp_path / "bench.json",
        target="nano",
        spec=spec,
        iterations=15,
        no_data_transfers=True,
    )
    assert b["standin"] and b["iterations"] == 15 and b["h2d"]["max_ms"] == 0
    assert b["exports"]["times"][0]["endToEndMs"] >= 0  # an 8.x-format export came back
    p = check_engine_parity(
        engine,
        man,
        onnx_path,
        tmp_path / "parity.json",
        target="nano",
        spec=spec,
        tolerance={"fp16": {"atol": 0.5, "rtol": 0.02}},
    )
    assert p["ok"]
    assert list(remote.iterdir()) == []  # every job removed its work dir on the device


def test_timing_cache_is_reused_across_builds(tmp_path, device):
    spec, onnx_path, _ = device
    cache = tmp_path / "timing.cache"
    for precision in ("fp32", "fp16"):
        build_engine(
            onnx_path,
            tmp_path / f"{precision}.engine",
            target="nano",
            spec=spec,
            precision=precision,
            profile="b1",
            image_size=32,
            timing_cache=cache,
        )
    lines = cache.read_bytes().splitlines()
    assert len(lines) == 3  # header + one entry per build: the second build read the first's


def test_unreachable_host(tmp_path, device):
    spec, onnx_path, _ = device
    spec = {**spec, "port": free_port()}  # nothing listens there
    with pytest.raises(TrtflowError) as e:
        build_engine(
            onnx_path,
            tmp_path / "e.engine",
            target="nano",
            spec=spec,
            precision="fp16",
            profile="b1",
            image_size=32,
        )
    msg = str(e.value)
    assert "target 'nano': cannot create the work dir on 127.0.0.1" in msg
    assert "Connection refused" in msg and "fix: is sshd running" in msg
    assert not (tmp_path / "e.engine").exists()


def test_auth_refused(tmp_path, device, sshd):
    spec, onnx_path, _ = device
    spec = {**spec, "ssh_config": str(sshd.wrong_key_config)}
    with pytest.raises(TrtflowError) as e:
        build_engine(
            onnx_path,
            tmp_path / "e.engine",
            target="nano",
            spec=spec,
            precision="fp16",
            profile="b1",
            image_size=32,
        )
    msg = str(e.value)
    assert "Permission denied" in msg and "never stores keys" in msg


@pytest.mark.parametrize(
    ("fail", "expect"),
    [
        ("parse", r"failed \(trtexec exit 1\):.*While parsing node number 0 \[Conv"),
        ("oom", r"ran out of device memory:.*Cuda Runtime \(out of memory\)"),
    ],
)
def test_device_failures_bring_back_the_device_message(tmp_path, device, fail, expect):
    spec, onnx_path, remote = device
    spec = {**spec, "trtexec": str(make_trtexec(tmp_path / f"bin-{fail}", "8.2.1", fail=fail))}
    engine = tmp_path / "out" / "e.engine"
    with pytest.raises(TrtflowError, match=expect):
        build_engine(
            onnx_path,
            engine,
            target="nano",
            spec=spec,
            precision="fp16",
            profile="b1",
            image_size=32,
        )
    assert not engine.exists() and not list(engine.parent.glob("*"))
    assert list(remote.iterdir()) == []


def test_trtexec_missing_on_device(tmp_path, device):
    spec, onnx_path, _ = device
    spec = {**spec, "trtexec": "/nonexistent/trtexec"}
    with pytest.raises(
        TrtflowError, match=r"not found on 127\.0\.0\.1.*JetPack: /usr/src/tensorrt"
    ):
        build_engine(
            onnx_path,
            tmp_path / "e.engine",
            target="nano",
            spec=spec,
            precision="fp16",
            profile="b1",
            image_size=32,
        )


def test_engine_of_another_tensorrt_version_is_refused(tmp_path, device):
    """A plan built by 8.2.1 does not load on a device now running 8.2.3 (nor do we claim so)."""
    spec, onnx_path, _ = device
    engine = tmp_path / "e.engine"
    build_engine(
        onnx_path, engine, target="nano", spec=spec, precision="fp16", profile="b1", image_size=32
    )
    newer = {
        **spec,
        "tensorrt": "8.2.3",
        "trtexec": str(make_trtexec(tmp_path / "bin-823", "8.2.3")),
    }
    with pytest.raises(TrtflowError, match="not compatible with this version of TensorRT"):
        benchmark_engine(
            engine,
            Path(f"{engine}.manifest.json"),
            tmp_path / "b.json",
            target="nano",
            spec=newer,
            iterations=5,
        )
