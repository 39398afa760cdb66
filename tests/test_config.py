"""Config validation: every bad value fails at parse time with one line naming the key."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO, tiny_config, tiny_model

from trtflow.core.config import default_recipe, load_config, validate_config
from trtflow.core.errors import TrtflowError


def test_default_config_is_valid_and_defaults_filled():
    cfg = load_config(REPO / "config.yaml")
    assert cfg["onnx"]["opset"] == 17
    for m in cfg["models"].values():
        assert all(s % 32 == 0 for s in m["image_sizes"])
        assert m["source"] == "builtin"


BAD = [
    # (what, config change, words the message must contain)
    (
        "unknown config key",
        lambda c: c.update(colour="blue"),
        ["unknown key 'colour'", "remove it"],
    ),
    (
        "unknown model key",
        lambda c: c["models"]["tiny"].update(imgsz=64),
        ["models.tiny", "'imgsz'"],
    ),
    (
        "unknown patch",
        lambda c: c["models"]["tiny"]["patches"].append("fold_all"),
        [f"models.tiny.patches[{len(default_recipe())}]", "'fold_all'", "nchw_input"],
    ),
    ("opset 19", lambda c: c.update(onnx={"opset": 19}), ["onnx.opset", "19", "<= 18"]),
    (
        "image size",
        lambda c: c["models"]["tiny"].update(image_sizes=[100]),
        ["models.tiny.image_sizes[0]", "not a multiple of 32", "96 or 128"],
    ),
    (
        "precision",
        lambda c: c.update(precisions=["fp32", "fp8"]),
        ["precisions[1]", "'fp8'", "fp16"],
    ),
    ("batch 0", lambda c: c.update(batch_sizes=[0]), ["batch_sizes[0]", ">= 1"]),
    ("negative model batch", lambda c: c["models"]["tiny"].update(batch=-2), ["models.tiny.batch"]),
    (
        "bad source",
        lambda c: c["models"]["tiny"].update(source="torch"),
        ["models.tiny.source", "'torch'"],
    ),
]


@pytest.mark.parametrize("what,change,words", BAD, ids=[b[0] for b in BAD])
def test_bad_config_fails_naming_the_key(what, change, words):
    cfg = tiny_config()
    change(cfg)
    with pytest.raises(TrtflowError) as err:
        validate_config(cfg)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)
    assert "fix:" in msg


@pytest.mark.parametrize("what,change,words", BAD[:7], ids=[b[0] for b in BAD[:7]])
def test_bad_config_fails_the_workflow_in_the_first_second(workdir, what, change, words):
    """Through the real snakemake CLI: exit != 0, the message, nothing created."""
    cfg = tiny_config()
    change(cfg)
    workdir.write_config(cfg)
    proc = workdir.snakemake("-n", check=False, timeout=120)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    for w in words:
        assert w in out, (w, out[-3000:])
    assert not (workdir.path / "results").exists()


def test_valid_model_batch_forms():
    for batch in ("dynamic", 1, 8):
        cfg = validate_config(tiny_config({"m": tiny_model(batch=batch)}))
        assert cfg["models"]["m"]["batch"] == batch


def test_cli_validate_config(tmp_path):
    from conftest import run_cli

    bad = tiny_config()
    bad["models"]["tiny"]["image_sizes"] = [33]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = run_cli("validate-config", str(path))
    assert proc.returncode == 1
    assert "image_sizes[0]: 33 is not a multiple of 32" in proc.stderr


@pytest.mark.parametrize(
    "text,words",
    [
        ("models:\n  a:\n    source: builtin\n  a:\n    source: pb\n",
         ["line 4: duplicate key 'a' (first given at line 2)", "remove or rename"]),
        ("models:\n\ta:\n    source: builtin\n", ["line 2, column 1", "indent with spaces"]),
        ("models: [unclosed\n", ["line 2, column 1", "fix the YAML syntax"]),
    ],
)  # fmt: skip
def test_config_file_errors_name_the_line(tmp_path, workdir, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TrtflowError) as err:
        load_config(path)
    for w in words:
        assert w in str(err.value)
    (workdir.path / "config.yaml").write_text(text)  # the workflow refuses it the same way
    proc = workdir.snakemake("-n", check=False)
    assert proc.returncode != 0
    assert all(w in proc.stdout + proc.stderr for w in words), proc.stderr[-2000:]


def test_dynamic_profile_order_is_checked_at_parse(workdir):
    cfg = tiny_config(engine={"dynamic_profiles": [{"min": 4, "opt": 2, "max": 8}]})
    with pytest.raises(TrtflowError, match=r"engine.dynamic_profiles\[0\]: min 4, opt 2"):
        validate_config(cfg)
    workdir.write_config(cfg)
    proc = workdir.snakemake("-n", check=False)
    assert proc.returncode != 0 and "min <= opt <= max" in proc.stdout + proc.stderr


def test_results_that_is_a_file_fails_in_one_line(workdir):
    workdir.write_config(tiny_config())
    (workdir.path / "results").write_text("not a folder")
    proc = workdir.snakemake("-n", check=False)
    assert proc.returncode != 0
    assert "results is a file, but trtflow writes its results there" in proc.stdout + proc.stderr
    assert "NotADirectoryError" not in proc.stdout + proc.stderr


def test_one_of_keys_list_every_alternative():
    for bad in ("four", 0, 5000):
        with pytest.raises(TrtflowError) as err:
            validate_config(tiny_config({"t": tiny_model(batch=bad)}))
        assert f"models.t.batch: {bad!r} is not valid" in str(err.value)
        assert "use dynamic or an integer >= 1 and <= 1024" in str(err.value)


def test_a_config_validated_once_skips_jsonschema_next_time(tmp_path, monkeypatch):
    """The second validation of the same config (a no-op rerun, a job's own process) does not
    import jsonschema and gives the same defaults; a changed config or schema is checked again
    and a bad one still fails although a good one was remembered."""
    import subprocess
    import sys

    import trtflow.core.config as config_module

    cache = tmp_path / "valid-configs.json"
    monkeypatch.setattr(config_module, "VALID_CACHE", cache)
    good = load_config(REPO / "config.yaml")
    assert cache.is_file() and len(yaml.safe_load(cache.read_text())) == 1
    probe = (
        "import sys, json\n"
        "import trtflow.core.config as c\n"
        f"c.VALID_CACHE = c.Path({str(cache)!r})\n"
        f"out = c.load_config({str(REPO / 'config.yaml')!r})\n"
        "print(json.dumps(['jsonschema' in sys.modules, out]))\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    imported, again = yaml.safe_load(run.stdout)
    assert not imported and again == good
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    raw["onnx"] = {"opset": 19}
    with pytest.raises(TrtflowError, match="onnx.opset"):
        validate_config(raw)
    schema = config_module.load_schema()
    schema["properties"]["onnx"]["properties"]["opset"]["maximum"] = 16
    with pytest.raises(TrtflowError, match="<= 16"):
        validate_config(yaml.safe_load((REPO / "config.yaml").read_text()), schema=schema)


def test_a_bad_command_line_override_names_config_not_the_file(workdir):
    """A mistake in a ``--config KEY=VALUE`` override is reported as coming from ``--config``
    (not config.yaml), and a string where a number belongs says why: Snakemake reads every value
    inside a mapping as a string."""
    workdir.write_config(tiny_config())
    proc = workdir.snakemake("-n", "--config", 'benchmark={"iterations": 3}', check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "--config benchmark=…: benchmark.iterations: '3' has the wrong type" in out, out[-2000:]
    assert "use an integer" in out and "give this one in a --configfile" in out
    proc = workdir.snakemake("-n", "--config", "precisions=[fp16]", check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
