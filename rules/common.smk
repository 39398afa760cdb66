# Workflow-side Python: config loading, zoo expansion, path helpers.
# Never import TensorFlow, TensorRT or ONNX Runtime here: the DAG must build in a second on any
# host, including one that only has Snakemake.

import hashlib
import sys
from pathlib import Path

REPO = Path(workflow.basedir)
sys.path.insert(0, str(REPO))

from trtflow.config import validate_config  # noqa: E402
from trtflow.errors import TrtflowError  # noqa: E402

try:
    _validated = validate_config(
        dict(config),
        source=", ".join(str(f) for f in workflow.configfiles) or "config",
    )
except TrtflowError as exc:
    raise WorkflowError(str(exc)) from None
config.clear()
config.update(_validated)

MODELS = config["models"]


def check_model_paths():
    """A zoo entry's model file must exist on the host that reads it (not with remote storage)."""
    if workflow.storage_settings.default_storage_provider:
        return
    for name, m in MODELS.items():
        if m["source"] != "builtin" and not m["path"]:
            raise WorkflowError(
                f"config: models.{name}.path is required for source {m['source']} "
                "— fix: set it to the model file or directory"
            )
        if m["path"] and not Path(m["path"]).exists():
            raise WorkflowError(
                f"config: models.{name}.path: {m['path']} does not exist "
                "— fix: point it at the model file (relative to the working directory)"
            )


check_model_paths()

# Host role of every rule: the machine kind it must run on. Profiles route by it
# (see profiles/ and README "Hosts"); the rules carry it as resources.host_role.
ROLE_TRAIN = "train"
ROLE_CONVERT = "convert"
ROLE_TARGET = "target"


wildcard_constraints:
    model="|".join(sorted(MODELS)) or "NO_MODEL",
    imgsz=r"\d+",
    batch=r"\d+",


# ---------------------------------------------------------------- code that scripts import
# Snakemake does not notice edits to modules a script imports; each rule passes the hash of
# the trtflow modules it runs as a param, so a code change reruns exactly the affected stage.
def code_hash(*modules):
    h = hashlib.sha256()
    for name in ("errors", *modules):
        h.update((REPO / "trtflow" / f"{name}.py").read_bytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- zoo expansion
def model_image_sizes(model):
    return MODELS[model]["image_sizes"]


def model_batch_sizes(model):
    """Batch sizes benchmarked for a model: a static-batch ONNX only runs its own batch."""
    batch = MODELS[model]["batch"]
    if batch == "dynamic":
        return config["batch_sizes"]
    return [batch]


def zoo(pattern, **fixed):
    """Expand a path pattern over every (model, image size[, batch]) of the zoo."""
    out = []
    for model in MODELS:
        for imgsz in model_image_sizes(model):
            if "{batch}" in pattern:
                for batch in model_batch_sizes(model):
                    out.append(pattern.format(model=model, imgsz=imgsz, batch=batch, **fixed))
            else:
                out.append(pattern.format(model=model, imgsz=imgsz, **fixed))
    return out


# ---------------------------------------------------------------- one path grammar
SAVED_MODEL = "results/saved_model/{model}/{imgsz}"
PB = "results/pb/{model}/{imgsz}/model.pb"
ONNX_RAW = "results/onnx/{model}/{imgsz}/model.onnx"
ONNX_PATCHED = "results/patched/{model}/{imgsz}/model.onnx"
PARITY = "results/parity/{model}/{imgsz}/parity.json"
BENCH_ONNX = "results/benchmark_onnx/{model}/{imgsz}/b{batch}.json"
SUMMARY_CSV = "results/summary.csv"
SUMMARY_MD = "results/summary.md"


def manifest(path):
    """The manifest written next to an artifact."""
    return path + ".manifest.json"


def log_of(stage, wildcards="{model}/{imgsz}"):
    return f"logs/{stage}/{wildcards}.log"


def bench_of(stage, wildcards="{model}/{imgsz}"):
    return f"benchmarks/{stage}/{wildcards}.tsv"


# ---------------------------------------------------------------- per-model lookups
def get_model(wildcards):
    return MODELS[wildcards.model]


def get_saved_model_sources(wildcards):
    """Inputs of export_saved_model: the Keras model/weights file, if the entry names one."""
    m = MODELS[wildcards.model]
    return [m["path"]] if m["path"] and m["source"] in ("builtin", "keras") else []


def get_pb_source(wildcards):
    """Input of export_pb: our SavedModel for Keras sources, else the user's SavedModel/pb."""
    m = MODELS[wildcards.model]
    if m["source"] in ("builtin", "keras"):
        return SAVED_MODEL.format(model=wildcards.model, imgsz=wildcards.imgsz)
    return m["path"]


def get_export_params(wildcards):
    m = MODELS[wildcards.model]
    return {
        "source": m["source"],
        "variant": m["variant"],
        "classes": m["classes"],
        "seed": m["seed"],
        "path": m["path"],
        "input_name": m["input_name"],
        "output_name": m["output_name"],
        "image_size": int(wildcards.imgsz),
    }


def get_patch_params(wildcards):
    m = MODELS[wildcards.model]
    return {
        "recipe": m["patches"],
        "image_size": int(wildcards.imgsz),
        "batch": m["batch"],
        "box_format": m["box_format"],
        "nms": m["nms"],
    }


def get_parity_params(wildcards):
    m = MODELS[wildcards.model]
    return {**config["parity"], "box_format": m["box_format"], "image_size": int(wildcards.imgsz)}
