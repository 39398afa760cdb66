"""The profiles against real engines: a one-node Slurm cluster and an S3 server (SeaweedFS),
both on 127.0.0.1, started by .ci/services/{slurm,s3}.sh (see .ci/run).

Each test skips with the reason when its service is not up, unless TRTFLOW_REQUIRE_SERVICES=1
(CI), where a missing service is a failure. Every "host" is its own working directory with its
own .snakemake; hosts share only the bucket.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config, tiny_model

REPO = Path(__file__).resolve().parent.parent
SERVICES = REPO / ".ci" / "services"
AGGREGATES = {"all", "pb", "onnx", "preflight", "parity", "benchmark", "report", "engine"}
TARGET_RULES = {"build_engine", "benchmark_engine", "check_engine_parity", "render_engine_summary"}
# CI's cluster has no accounting (sacct would wait forever) and short jobs.
SLURM_CI_ARGS = (
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
)

pytestmark = pytest.mark.services


def require(var: str, service: str) -> str:
    value = os.environ.get(var, "")
    if not value:
        reason = (
            f"{service} is not running ({var} unset): "
            f'eval "$(bash .ci/services/{service}.sh start)"'
        )
        if os.environ.get("TRTFLOW_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return value


@pytest.fixture
def s3() -> str:
    return require("TRTFLOW_S3_ENDPOINT", "s3")


@pytest.fixture
def slurm() -> str:
    return require("TRTFLOW_SLURM", "slurm")


def s3_client():
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=os.environ["TRTFLOW_S3_ENDPOINT"],
        aws_access_key_id=os.environ["SNAKEMAKE_STORAGE_S3_ACCESS_KEY"],
        aws_secret_access_key=os.environ["SNAKEMAKE_STORAGE_S3_SECRET_KEY"],
        region_name="us-east-1",
    )


def bucket_keys(bucket: str) -> set[str]:
    client = s3_client()
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return {o["Key"] for page in pages for o in page.get("Contents", [])}
    except client.exceptions.NoSuchBucket:
        return set()


def s3_service(action: str) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["bash", str(SERVICES / "s3.sh"), action], check=True, env=env,
                   stdout=subprocess.DEVNULL, timeout=120)  # fmt: skip


def stand_in_target(directory: Path) -> dict:
    """A local TensorRT target whose trtexec is the TEST STAND-IN (tests/standin/trtexec)."""
    directory.mkdir(parents=True, exist_ok=True)
    wrapper = directory / "trtexec"
    wrapper.write_text(
        "#!/bin/sh\n# TEST STAND-IN wrapper, not TensorRT\n"
        f'TRTFLOW_STANDIN_TRT=10.3.0 exec "{sys.executable}" '
        f'"{REPO / "tests" / "standin" / "trtexec"}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return {"transport": "local", "trtexec": str(wrapper), "tensorrt": "10.3",
            "device": "STAND-IN GPU", "precisions": ["fp32"]}  # fmt: skip


def engine_config(tmp: Path, models: dict | None = None) -> dict:
    cfg = tiny_config(models, targets={"dev": stand_in_target(tmp / "device-bin")})
    cfg["engine"] = {"benchmark": {"warmup_ms": 0, "iterations": 2}}
    return cfg


class Host:
    """One machine of the chain: a working directory, a profile, the shared bucket."""

    def __init__(self, path: Path, profile: str, bucket: str | None = None, *extra: str):
        self.path, self.profile, self.bucket, self.extra = path, profile, bucket, extra
        path.mkdir(parents=True, exist_ok=True)

    def write_config(self, cfg: dict) -> None:
        (self.path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
                "-d", str(self.path), "--profile", str(REPO / "profiles" / self.profile),
                *self.extra, *args]  # fmt: skip

    def env(self) -> dict[str, str]:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        if self.bucket:
            env["TRTFLOW_BUCKET"] = self.bucket
        return env

    def run(self, *args: str, ok: bool = True, timeout: int = 900) -> str:
        proc = subprocess.run(self.cmd(*args), capture_output=True, text=True,
                              env=self.env(), timeout=timeout)  # fmt: skip
        out = proc.stdout + proc.stderr
        if ok and proc.returncode != 0:
            raise AssertionError(
                f"{self.profile}: snakemake {' '.join(args)} failed:\n{out[-6000:]}"
            )
        if not ok and proc.returncode == 0:
            raise AssertionError(
                f"{self.profile}: snakemake {' '.join(args)} passed:\n{out[-3000:]}"
            )
        return out

    def start(self, *args: str) -> tuple[subprocess.Popen, Path]:
        log = self.path / f"run-{uuid.uuid4().hex[:6]}.out"
        with open(log, "w") as fh:
            proc = subprocess.Popen(self.cmd(*args), stdout=fh, stderr=subprocess.STDOUT,
                                    env=self.env())  # fmt: skip
        return proc, log

    def planned(self, *targets: str) -> Counter:
        """Rule -> jobs a dry run would execute (aggregate targets left out)."""
        return executed(self.run("-n", *targets))

    def assert_up_to_date(self, *targets: str) -> None:
        out = self.run("-n", *targets)
        reasons = "\n".join(re.findall(r"^\s*(?:(?:local)?rule \w+:|reason: .*)$", out, flags=re.M))
        assert not executed(out), f"{self.profile} would rerun:\n{reasons}"


def executed(output: str) -> Counter:
    """Rule -> jobs started, from snakemake's output (aggregate targets left out)."""
    rules = re.findall(r"^(?:local)?rule (\w+):$", output, flags=re.M)
    return Counter(r for r in rules if r not in AGGREGATES)


def wait_for(log: Path, pattern: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if re.search(pattern, log.read_text(), flags=re.M):
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {pattern!r}:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"no {pattern!r} within {timeout} s:\n{log.read_text()[-4000:]}")


def finish(proc: subprocess.Popen, log: Path, timeout: float = 600) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"no end within {timeout} s:\n{log.read_text()[-4000:]}") from None
    return log.read_text()


def unique_bucket(name: str) -> str:
    return f"trtflow-{name}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- Slurm


def squeue_jobs() -> dict[str, tuple[str, str, str, str]]:
    """Job id -> (rule, partition, gres, state) of every job slurmctld still remembers."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%P|%b|%T|%k"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    jobs = {}
    for line in out.splitlines():
        jobid, partition, gres, state, comment = line.split("|", 4)
        m = re.match(r"rule_(.+?)(?:_wildcards_.*)?$", comment)
        jobs[jobid] = (m.group(1) if m else comment, partition, gres, state)
    return jobs


def test_slurm_zoo_routes_roles_and_survives_scancel(slurm, tmp_path):
    """The tiny zoo (patched ONNX + engines on a stand-in target) through profiles/slurm:
    the first Slurm job is cancelled mid-way (the run fails), the rerun completes, target-role
    jobs ran in partition gpu with GRES gpu, the others in cpu, and a third run does nothing."""
    host = Host(tmp_path / "cluster", "slurm", None, *SLURM_CI_ARGS)
    host.write_config(engine_config(tmp_path))
    before = set(squeue_jobs())

    proc, log = host.start("onnx", "engine")
    end = time.time() + 180
    victim = None
    while victim is None and time.time() < end and proc.poll() is None:
        running = {j: v for j, v in squeue_jobs().items() if j not in before and v[3] == "RUNNING"}
        victim = next(iter(sorted(running)), None)
        time.sleep(0.5)
    assert victim, f"no Slurm job started:\n{log.read_text()[-4000:]}"
    time.sleep(3)  # mid-way through the job (TF import + export take longer)
    subprocess.run(["scancel", victim], check=True)
    out = finish(proc, log)
    assert proc.returncode != 0, out[-3000:]
    cancelled = rf"SLURM-job '{victim}' failed, SLURM status is: 'CANCELLED'"
    assert re.search(cancelled, out), out[-3000:]
    assert "Error in rule" in out

    out = host.run("onnx", "engine")
    assert "steps (100%) done" in out
    assert list((host.path / "results/benchmark_engine/dev/tiny/64/fp32").glob("*.json"))
    jobs = {j: v for j, v in squeue_jobs().items() if j not in before}
    ran = Counter(v[0] for v in jobs.values() if v[3] == "COMPLETED")
    assert {"export_pb", "convert_pb_to_onnx", "build_engine", "benchmark_engine"} <= set(ran)
    for jobid, (rule, partition, gres, _) in jobs.items():
        if rule in TARGET_RULES:
            assert (partition, "gpu" in gres) == ("gpu", True), (jobid, rule, partition, gres)
        else:
            assert partition == "cpu", (jobid, rule, partition)
    host.assert_up_to_date("onnx", "engine")


# ---------------------------------------------------------------- S3


def test_s3_zoo_survives_server_stop(s3, tmp_path):
    """The tiny zoo through profiles/s3. The S3 server is stopped while export_pb runs: the run
    fails naming the storage error, nothing of that job counts as done (on this host or on
    another one), and after a restart the rerun completes; a third run does nothing."""
    bucket = unique_bucket("s3")
    host = Host(tmp_path / "box", "s3", bucket)
    host.write_config(tiny_config())

    proc, log = host.start()
    try:
        wait_for(log, r"^localrule export_pb:$", proc)
        time.sleep(3)
        s3_service("stop")
        out = finish(proc, log)
    finally:
        s3_service("start")
    assert proc.returncode != 0, out[-3000:]
    assert re.search(r"Failed to (store output in|check existence of .* in)? ?storage|"
                     r"Could not connect to the endpoint URL", out), out[-3000:]  # fmt: skip
    keys = bucket_keys(bucket)
    assert "trtflow/results/saved_model/tiny/64.manifest.json" in keys  # the job before is done
    assert not {"trtflow/results/pb/tiny/64/model.pb",
                "trtflow/results/pb/tiny/64/model.pb.manifest.json"} <= keys  # fmt: skip
    # not taken as complete: here export_pb is planned again, and a convert host cannot start
    assert host.planned("pb") == Counter({"export_pb": 1})
    other = Host(tmp_path / "other", "convert", bucket)
    other.write_config(tiny_config())
    assert "Missing input files for rule convert_pb_to_onnx" in other.run("-n", "onnx", ok=False)

    out = host.run()
    assert executed(out)["export_pb"] == 1 and executed(out)["render_summary"] == 1
    keys = bucket_keys(bucket)
    for key in ("results/pb/tiny/64/model.pb", "results/patched/tiny/64/model.onnx",
                "results/summary.md", "logs/export_pb/tiny/64.log"):  # fmt: skip
        assert f"trtflow/{key}" in keys, key
    # every job's log is on the host that ran it (and in the bucket)
    assert list((host.path / ".snakemake/storage/s3").glob(f"{bucket}/trtflow/logs/*/tiny/64.log"))
    host.assert_up_to_date()


# ---------------------------------------------------------------- three hosts


def test_three_hosts_rerun_only_on_change(s3, tmp_path):
    """train -> convert -> device, three working directories sharing one bucket. Each host
    runs only its own rules, continues from what the previous one uploaded, and after a change
    upstream (one model's seed) reruns exactly that model's jobs, only once the change has
    reached it."""
    bucket = unique_bucket("hosts")
    models = {"tiny-a": tiny_model(), "tiny-b": tiny_model()}
    train = Host(tmp_path / "train", "train", bucket)
    convert = Host(tmp_path / "convert", "convert", bucket)
    device = Host(tmp_path / "device", "device", bucket)
    cfg = engine_config(tmp_path, models)
    for host in (train, convert, device):
        host.write_config(cfg)

    assert "Missing input files for rule convert_pb_to_onnx" in convert.run("onnx", ok=False)
    assert executed(train.run("pb")) == {"export_saved_model": 2, "export_pb": 2}
    assert executed(convert.run("onnx", "preflight")) == {
        "convert_pb_to_onnx": 2, "patch_onnx": 2, "preflight_engine": 2}  # fmt: skip
    assert executed(device.run("engine")) == {
        "build_engine": 2, "benchmark_engine": 2, "check_engine_parity": 2,
        "render_engine_summary": 1}  # fmt: skip
    for host, targets in ((train, ["pb"]), (convert, ["onnx", "preflight"]), (device, ["engine"])):
        host.assert_up_to_date(*targets)

    time.sleep(1.1)  # S3 mtimes have 1 s resolution
    models["tiny-b"]["seed"] = 1
    cfg = engine_config(tmp_path, models)
    for host in (train, convert, device):
        host.write_config(cfg)
    assert executed(train.run("pb")) == {"export_saved_model": 1, "export_pb": 1}
    device.assert_up_to_date("engine")  # the new pb has not been converted yet
    assert executed(convert.run("onnx", "preflight")) == {
        "convert_pb_to_onnx": 1, "patch_onnx": 1, "preflight_engine": 1}  # fmt: skip
    out = device.run("engine")
    assert executed(out) == {"build_engine": 1, "benchmark_engine": 1, "check_engine_parity": 1,
                             "render_engine_summary": 1}  # fmt: skip
    assert "tiny-a" not in "".join(re.findall(r"wildcards: .*", out))
    for host, targets in ((train, ["pb"]), (convert, ["onnx", "preflight"]), (device, ["engine"])):
        host.assert_up_to_date(*targets)
