# trtflow: TensorFlow YOLOv5 -> model.pb -> ONNX -> patched ONNX -> TensorRT engines.
# This file is the table of contents; logic lives in rules/common.smk and the trtflow package.

from snakemake.utils import min_version

min_version("9.0")


include: "rules/configfile.smk"


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/export.smk"
include: "rules/convert.smk"
include: "rules/patch.smk"
include: "rules/parity.smk"
include: "rules/benchmark.smk"
include: "rules/report.smk"
include: "rules/quantize.smk"
include: "rules/fp16.smk"
include: "rules/engine.smk"
include: "rules/train.smk"
include: "rules/pictures.smk"


rule all:
    default_target: True
    input:
        zoo(PARITY),
        zoo(BENCH_ONNX),
        int8_zoo(INT8_GATE, BENCH_INT8),
        pictures_zoo(),
        SUMMARY_CSV,
        SUMMARY_MD,
        engines_in_all,
        REPORT_ZOO,
        GATES,


rule pb:
    input:
        zoo(PB),


rule onnx:
    input:
        zoo(ONNX_PATCHED),


rule parity:
    input:
        zoo(PARITY),


rule benchmark:
    input:
        zoo(BENCH_ONNX),


rule report:
    input:
        SUMMARY_CSV,
        SUMMARY_MD,
        REPORT_ZOO,
        GATES,


rule int8:
    input:
        zoo(INT8_QDQ),
        trt_cache_zoo(),
        zoo(INT8_GATE),
        zoo(BENCH_INT8),
        pictures_zoo(),


# The train host's training runs (train.models); CPU hours, a GPU minutes (README "Training").
rule train:
    input:
        train_zoo(),


rule engine:
    input:
        get_engine_outputs,


# The convert host's share of the engine stage (profiles/convert), before the device builds.
rule preflight:
    input:
        get_preflight_outputs,
