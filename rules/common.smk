# Workflow-side Python: config loading, zoo expansion, path helpers.
# Never import TensorFlow, TensorRT or ONNX Runtime here: the DAG must build in a second on any
# host, including one that only has Snakemake.

import hashlib
import os
import sys
from pathlib import Path
from types import SimpleNamespace

REPO = Path(workflow.basedir)
sys.path.insert(0, str(REPO))

from trtflow.core.codehash import script_hash as _script_hash  # noqa: E402
from trtflow.core.config import publish_config_files, validate_config  # noqa: E402
from trtflow.core.errors import TrtflowError  # noqa: E402

# The keys each model entry sets itself (before the schema fills defaults): a value the
# config gives always overrides what trtflow discovers about a user's model.
CONFIGURED = {
    name: set(entry) if isinstance(entry, dict) else set()
    for name, entry in (dict(config).get("models") or {}).items()
}

try:
    _validated = validate_config(
        dict(config),
        source=", ".join(str(f) for f in workflow.configfiles) or "config",
        overridden=set(workflow.config_settings.overwrite_config),
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


def check_output_folders():
    """results/, logs/ and benchmarks/ must be writable folders: a file in their place or a
    read-only working directory fails in the first second, naming the path."""
    if workflow.storage_settings.default_storage_provider:
        return
    for folder in ("results", "logs", "benchmarks"):
        path = Path(folder)
        if path.exists() and not path.is_dir():
            raise WorkflowError(
                f"{path.resolve()} is a file, but trtflow writes its {folder} there "
                "— fix: move or rename that file, then rerun"
            )
        target = path if path.exists() else Path(".")
        if not os.access(target, os.W_OK | os.X_OK):
            raise WorkflowError(
                f"{target.resolve()} is not writable — fix: run from a directory you can "
                "write to (snakemake -d <dir>), or change its permissions"
            )


check_output_folders()

# Host role of every rule: the machine kind it must run on. Profiles route by it
# (see profiles/ and README "Hosts"); the rules carry it as resources.host_role.
ROLE_TRAIN = "train"
ROLE_CONVERT = "convert"
ROLE_TARGET = "target"

# profiles/s3 and the host profiles name the bucket as $TRTFLOW_BUCKET, which Snakemake expands
# when it reads the profile; left unexpanded, boto3 would fail later with a regex dump.
_storage_prefix = str(getattr(workflow.storage_settings, "default_storage_prefix", "") or "")
if "$" in _storage_prefix:
    raise WorkflowError(
        f"default-storage-prefix {_storage_prefix!r} names an unset environment variable; "
        'fix: export TRTFLOW_BUCKET=<your bucket> (README "Hosts")'
    )


wildcard_constraints:
    model="|".join(sorted(MODELS)) or "NO_MODEL",
    imgsz=r"\d+",
    batch=r"\d+",
    target="|".join(sorted(config["targets"])) or "NO_TARGET",
    precision="fp32|fp16|int8|best",
    profile=r"b\d+(-\d+-\d+)?",


# ---------------------------------------------------------------- code that scripts import
# Snakemake does not notice edits to modules a script imports; each rule passes a hash of the
# trtflow code its script runs (scripts/<rule>.py -> its stage function -> the import closure of
# what that function uses, computed from the imports: trtflow/core/codehash.py) as a param, so
# a code change reruns exactly the rules that run it.
def code_hash(rule):
    return _script_hash(REPO / "scripts" / f"{rule}.py")


# ---------------------------------------------------------------- zoo expansion
from trtflow.tf.pbinfo import image_input  # noqa: E402  (pure Python: no TensorFlow)


def configured(model, key):
    """The model entry's own value of ``key``, or None when the schema default fills it."""
    return MODELS[model][key] if key in CONFIGURED.get(model, ()) else None


def model_image_sizes(model):
    """A pb's size is read from its graph's input unless image_sizes is configured (export_pb
    checks the two agree); without a readable fixed size, the schema default."""
    m = MODELS[model]
    if m["source"] == "pb" and configured(model, "image_sizes") is None and m["path"]:
        found = image_input(m["path"], m["input_name"])
        if found is not None and found.image_size:
            return [found.image_size]
    return m["image_sizes"]


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
    return f"{path}.manifest.json"


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
        "box_format": m["box_format"],
        "decode_layout": m["decode_layout"],
    }


def get_patch_params(wildcards):
    m = MODELS[wildcards.model]
    return {
        "patches": m["patches"],
        "image_size": int(wildcards.imgsz),
        "batch": m["batch"],
        "box_format": m["box_format"],
        "nms": m["nms"],
    }


def get_parity_params(wildcards):
    m = MODELS[wildcards.model]
    return {**config["parity"], "box_format": m["box_format"], "image_size": int(wildcards.imgsz)}


def get_bench_threads(wildcards):
    """A CPU benchmark job takes every core Snakemake was given (--cores), so no other job runs
    beside it while it times; without --cores (cluster executors, where each job gets its own
    allocation) it asks for benchmark.threads cores (at least one)."""
    return workflow.resource_settings.cores or max(1, config["benchmark"]["threads"])


# ---------------------------------------------------------------- INT8 (rules/quantize.smk)
SAMPLE_IMAGES = "results/sample_images/builtin"
CALIB = "results/calib/{model}/{imgsz}/calib.npy"
CALIB_HOLDOUT = "results/calib/{model}/{imgsz}/holdout.npy"
INT8_QDQ = "results/int8/{model}/{imgsz}/model.qdq.onnx"
INT8_RANGES = "results/int8/{model}/{imgsz}/ranges.json"
INT8_TRT_CACHE = "results/int8/{model}/{imgsz}/calib_trt{trt}.cache"
INT8_GATE = "results/int8_gate/{model}/{imgsz}/gate.json"
BENCH_INT8 = "results/benchmark_int8/{model}/{imgsz}/b{batch}.json"


def int8_zoo(*patterns):
    """Expansions that `all` and the summary include only when int8.enabled is true."""
    if not config["int8"]["enabled"]:
        return []
    return [p for pattern in patterns for p in zoo(pattern)]


def trt_cache_zoo():
    """One TensorRT calibration cache per (model, image size, int8.trt_cache_versions)."""
    return [p for v in config["int8"]["trt_cache_versions"] for p in zoo(INT8_TRT_CACHE, trt=v)]


def get_calibration_images(wildcards):
    """The calibration image folder: calibration.images, or the built-in generated scenes."""
    return config["calibration"]["images"] or SAMPLE_IMAGES


def get_calibration_listing(wildcards):
    """Names, sizes and mtimes of the folder's images (a param: a changed file reruns)."""
    folder = config["calibration"]["images"]
    if not folder or not Path(folder).is_dir():
        return "builtin" if not folder else "missing"
    h = hashlib.sha256()
    for p in sorted(Path(folder).iterdir()):
        if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file():
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def get_calibration_params(wildcards):
    c = config["calibration"]
    return {k: c[k] for k in ("count", "holdout", "seed", "sampling")} | {
        "image_size": int(wildcards.imgsz)
    }


def get_int8_gate_inputs(wildcards):
    """The labelled COCO-format set of the gate, when int8.gate names one."""
    g = config["int8"]["gate"]
    if g["eval_annotations"] and not g["eval_images"]:
        raise WorkflowError(
            "int8.gate.eval_annotations is set but int8.gate.eval_images is not; "
            "fix: set eval_images to the folder holding the annotated images"
        )
    if g["eval_annotations"]:
        return {"eval_images": g["eval_images"], "eval_annotations": g["eval_annotations"]}
    return {}


# ---------------------------------------------------------------- engines (TensorRT targets)
# Pure lookups in the config: no TensorRT import, so `snakemake -n engine` works on any host.
from trtflow.trt.targets import (  # noqa: E402
    HOW_TO_CONFIGURE,
    NOT_RUN_HERE,
    Target,
    local_compute_capabilities,
    parse_profile,
    profile_name,
)

# The configured targets, typed (trtflow.trt.targets.Target), by name.
TARGETS = {name: Target.of(name, spec) for name, spec in config["targets"].items()}
#: What the engine stages' reproduce commands pass as --config (the target comes from there).
#: Not a param: naming the same settings in another file must not rebuild an engine.
publish_config_files(config_files(), workflow.config_settings.overwrite_config)
ENGINE = "results/engine/{target}/{model}/{imgsz}/{precision}/{profile}.engine"
ENGINE_BENCH = "results/benchmark_engine/{target}/{model}/{imgsz}/{precision}/{profile}.json"
ENGINE_PARITY = "results/parity_engine/{target}/{model}/{imgsz}/{precision}/{profile}.json"
PREFLIGHT = "results/preflight/{target}/{model}/{imgsz}/preflight.json"
# Per-target timing cache: a cache shared by that target's builds (not an artifact).
TIMING_CACHE = "results/timing_cache/{target}.cache"
ENGINE_WILDCARDS = "{target}/{model}/{imgsz}/{precision}/{profile}"
# fp16 ONNX of strongly typed builders (TensorRT-RTX has no fp16 flag), and the engines' summary.
ONNX_FP16 = "results/fp16/{model}/{imgsz}/model.onnx"
ENGINE_SUMMARY_CSV = "results/engine_summary.csv"
ENGINE_SUMMARY_MD = "results/engine_summary.md"
# GPUs of this host (nvidia-smi; no GPU library is imported): a TensorRT-RTX target's engines
# are benchmarked and checked only where one of its compute capabilities is present.
LOCAL_CAPS = (
    local_compute_capabilities() if any(t.is_rtx for t in TARGETS.values()) else frozenset()
)


def target_runs_here(target):
    return TARGETS[target].runs_here(LOCAL_CAPS)


def target_precisions(target):
    """The config's precisions this target supports (e.g. the Jetson Nano has no int8)."""
    return [p for p in config["precisions"] if p in TARGETS[target].precisions]


def batch_profiles(model):
    """Static b<N> per batch size; dynamic b<min>-<opt>-<max> profiles for a dynamic ONNX."""
    out = [profile_name(b, b, b) for b in model_batch_sizes(model)]
    if MODELS[model]["batch"] == "dynamic":
        for p in config["engine"]["dynamic_profiles"]:
            out.append(profile_name(p["min"], p["opt"], p["max"]))
    return list(dict.fromkeys(out))


def engine_zoo(pattern, runnable_only=False):
    """Expand over targets x models x image sizes x supported precisions x batch profiles
    (``runnable_only``: only targets whose engines can run from this host)."""
    out = []
    for target in TARGETS:
        if runnable_only and not target_runs_here(target):
            continue
        for model in MODELS:
            for imgsz in model_image_sizes(model):
                for precision in target_precisions(target):
                    for profile in batch_profiles(model):
                        out.append(
                            pattern.format(
                                target=target,
                                model=model,
                                imgsz=imgsz,
                                precision=precision,
                                profile=profile,
                            )
                        )
    return out


def get_engine_outputs(wildcards):
    """Inputs of the engine target; one clear message when no target is configured."""
    if not TARGETS:
        raise WorkflowError(f"no TensorRT target is configured — fix: {HOW_TO_CONFIGURE}")
    return (
        engine_zoo(ENGINE)
        + engine_zoo(ENGINE_BENCH, runnable_only=True)
        + engine_zoo(ENGINE_PARITY, runnable_only=True)
        + [ENGINE_SUMMARY_CSV, ENGINE_SUMMARY_MD]
    )


def engines_in_all(wildcards):
    """`all` builds (and, where they can run, times and checks) every configured target's
    engines; without targets it is the CPU stages alone."""
    return get_engine_outputs(wildcards) if TARGETS else []


def get_not_run_targets(wildcards):
    """Targets whose engines are built here but cannot run here, with the summary's words."""
    return {t: NOT_RUN_HERE for t in TARGETS if not target_runs_here(t)}


def get_preflight_outputs(wildcards):
    """Inputs of the preflight target: the convert host's checks, one per target x model x size."""
    return list(dict.fromkeys(engine_zoo(PREFLIGHT)))


def get_target_params(wildcards):
    """What of the target changes its engines (rerun trigger); how to reach it is read
    from the config at run time, so a new address does not rebuild anything."""
    return TARGETS[wildcards.target].build_relevant()


def get_preflight_params(wildcards):
    dynamic = any(
        parse_profile(p)["min"] != parse_profile(p)["max"] for p in batch_profiles(wildcards.model)
    )
    return {
        "tensorrt": TARGETS[wildcards.target].tensorrt,
        "backend": TARGETS[wildcards.target].backend,
        "dynamic": dynamic,
        "patches": MODELS[wildcards.model]["patches"],
    }


def get_preflight_sources(wildcards):
    """The other ONNX files this target's engines are built from (Q/DQ, fp16): preflight
    parses them too."""
    sources = {}
    for precision in target_precisions(wildcards.target):
        w = SimpleNamespace(precision=precision, **dict(wildcards.items()))
        sources.update({k: v for k, v in get_int8_inputs(w).items() if k == "qdq_onnx"})
        sources.update(get_fp16_inputs(w))
    return sources


def get_build_params(wildcards):
    return {
        "precision": wildcards.precision,
        "profile": parse_profile(wildcards.profile),
        "image_size": int(wildcards.imgsz),
        "timing_cache": TARGETS[wildcards.target].timing_cache,
    }


def get_int8_inputs(wildcards):
    """INT8 inputs of an int8/best engine: the config's own files, else the INT8 stage's.

    Without engine.int8.<model>, TensorRT >= 10 and TensorRT-RTX targets build the Q/DQ ONNX
    of quantize_onnx (explicit quantization); 8.x targets get a calibration cache written for their exact
    TensorRT version (implicit INT8), so a cache is never reused across versions.
    """
    if wildcards.precision not in ("int8", "best"):
        return {}
    spec = config["engine"]["int8"].get(wildcards.model, {})
    paths = {
        k: spec[k].format(model=wildcards.model, imgsz=wildcards.imgsz)
        for k in ("calibration_cache", "qdq_onnx")
        if spec.get(k)
    }
    if paths:
        return paths
    where = {"model": wildcards.model, "imgsz": wildcards.imgsz}
    version = TARGETS[wildcards.target].tensorrt
    if TARGETS[wildcards.target].int8_from_qdq:
        return {"qdq_onnx": INT8_QDQ.format(**where)}
    return {"calibration_cache": INT8_TRT_CACHE.format(trt=version, **where)}


def get_fp16_inputs(wildcards):
    """fp16 engines of strongly typed targets (TensorRT-RTX) are built from the fp16 ONNX."""
    if wildcards.precision == "fp16" and TARGETS[wildcards.target].fp16_from_onnx:
        return {"fp16_onnx": ONNX_FP16.format(model=wildcards.model, imgsz=wildcards.imgsz)}
    return {}


def get_timing_cache(wildcards):
    if TARGETS[wildcards.target].timing_cache:
        return TIMING_CACHE.format(target=wildcards.target)
    return None


def get_benchmark_engine_params(wildcards):
    return dict(config["engine"]["benchmark"])


def get_engine_tolerance(wildcards):
    return config["engine"]["parity"]["tolerance"][wildcards.precision]


# ---------------------------------------------------------------- report (rules/report.smk)
REPORT_ZOO = "results/report/zoo.html"
REPORT_PLOT = "results/report/plots/{name}.png"
REPORT_MODELS = "results/report/models"
REPORT_TARGETS = "results/report/targets"
GATES = "results/gates.json"


def get_report_manifests(wildcards):
    """Every zoo artifact's manifest the report links and times (SavedModels of Keras models)."""
    saved = [
        manifest(SAVED_MODEL).format(model=m, imgsz=s)
        for m in MODELS
        if MODELS[m]["source"] in ("builtin", "keras")
        for s in model_image_sizes(m)
    ]
    return saved + zoo(manifest(PB)) + zoo(manifest(ONNX_RAW)) + zoo(manifest(ONNX_PATCHED))


ENGINE_RESULTS = {  # kind -> (path pattern, log of the job that makes it), in the order made
    "preflight": (PREFLIGHT, log_of("preflight_engine", "{target}/{model}/{imgsz}")),
    "engine_manifests": (manifest(ENGINE), log_of("build_engine", ENGINE_WILDCARDS)),
    "engine_bench": (ENGINE_BENCH, log_of("benchmark_engine", ENGINE_WILDCARDS)),
    "engine_parity": (ENGINE_PARITY, log_of("check_engine_parity", ENGINE_WILDCARDS)),
}


def _engine_results():
    """Per expected engine: [(kind, path, log of the job that makes it)] in ENGINE_RESULTS order."""
    if not TARGETS:
        return []
    columns = [
        [(kind, p, lg) for p, lg in zip(engine_zoo(pattern), engine_zoo(log))]
        for kind, (pattern, log) in ENGINE_RESULTS.items()
    ]
    return [list(per_engine) for per_engine in zip(*columns)]


def _run_builds_engines():
    """Does this run build the engines itself (`all`, the default, or `engine`)? Not inside a
    job of a cluster/remote run (it takes what the run made), nor for `snakemake report`."""
    dag = workflow.dag_settings
    if dag.target_jobs:
        return False
    targets = set(dag.targets)
    return not targets or bool(targets & {"all", "engine"})


def get_report_engine_results(wildcards):
    """The engine results of the report. In a run that builds the engines, the ones it makes
    (built everywhere; timed and checked where the target runs here): the report comes after
    them, and shows them. Asked alone, the ones that exist when the DAG is built: the report
    never waits for (or fails with) a device job; run `snakemake engine` (or the device) first."""
    out = {kind: [] for kind in ENGINE_RESULTS if kind != "preflight"}
    builds = _run_builds_engines()
    for target, per_engine in zip(engine_zoo("{target}"), _engine_results()):
        runs = builds and target_runs_here(target)  # this run times and checks them too
        for kind, path, _ in per_engine:
            if kind not in out:
                continue
            made = runs or (builds and kind == "engine_manifests")
            if made or Path(path).exists():
                out[kind].append(path)
    return out


def get_report_missing(wildcards):
    """Per engine, its first missing result whose job left a log (else its first missing
    result) -> that log: the report's list of what failed and why."""
    out = {}
    run_kinds = ("engine_bench", "engine_parity")  # not in the DAG where the target cannot run
    for target, per_engine in zip(engine_zoo("{target}"), _engine_results()):
        runs = target_runs_here(target)
        missing = [
            (path, lg)
            for kind, path, lg in per_engine
            if not Path(path).exists() and (runs or kind not in run_kinds)
        ]
        if missing:
            path, lg = next(((p, lg) for p, lg in missing if Path(lg).exists()), missing[0])
            out[path] = lg
    return out


# ---------------------------------------------------------------- training (rules/train.smk)
DATASET = "results/dataset/builtin"
TRAINED = "results/train/{model}/{imgsz}/model.weights.h5"
TRAIN = config["train"]


def train_zoo():
    """One trained weights file per train.models entry, at train.image_size."""
    for name in TRAIN["models"]:
        if name not in MODELS or MODELS[name]["source"] not in ("builtin", "keras"):
            raise WorkflowError(
                f"config: train.models names {name!r}, which is not a builtin/keras zoo model; "
                "fix: list names under models: whose source is builtin or keras"
            )
    return [TRAINED.format(model=m, imgsz=TRAIN["image_size"]) for m in TRAIN["models"]]


def get_train_inputs(wildcards):
    """The data a training run reads: the built-in set, or the user's splits."""
    given = {k: TRAIN[k] for k in ("train_data", "val_data") if TRAIN[k]}
    return given if len(given) == 2 else {**given, "dataset": DATASET}


def get_train_params(wildcards):
    m = MODELS[wildcards.model]
    where = {
        k: TRAIN[k] or f"{DATASET}/images/{k.split('_')[0]}" for k in ("train_data", "val_data")
    }
    return {
        **where,
        **{k: TRAIN[k] for k in ("epochs", "batch", "seed", "cos_lr", "val_interval", "hyp")},
        "variant": m["variant"],
        "classes": m["classes"],
        "image_size": int(wildcards.imgsz),
        "checkpoint": f"resume/train/{wildcards.model}/{wildcards.imgsz}/last.ckpt.npz",
    }


def get_builtin_labels(wildcards):
    """The gate's labelled set is the built-in val split unless int8.gate names another."""
    g = config["int8"]["gate"]
    if g["eval_annotations"] or not g["builtin_labels"]:
        return {}
    return {"dataset": DATASET}


# ---------------------------------------------------------------- pictures (rules/pictures.smk)
PICTURES = "results/pictures/{model}/{imgsz}"


def get_picture_labels(wildcards):
    """The labelled images drawn: the gate's labelled set (its own, or the built-in one)."""
    return get_int8_gate_inputs(wildcards) or get_builtin_labels(wildcards)


def pictures_zoo():
    """One picture folder per model and size when the INT8 stage runs with a labelled set."""
    g = config["int8"]["gate"]
    if not config["int8"]["enabled"] or not (g["eval_annotations"] or g["builtin_labels"]):
        return []
    return zoo(PICTURES)
