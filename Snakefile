# trtflow: TensorFlow YOLOv5 -> model.pb -> ONNX -> patched ONNX -> TensorRT engines.
# This file is the table of contents; logic lives in rules/common.smk and the trtflow package.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/export.smk"
include: "rules/convert.smk"
include: "rules/patch.smk"
include: "rules/parity.smk"
include: "rules/benchmark.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        zoo(PARITY),
        zoo(BENCH_ONNX),
        SUMMARY_CSV,
        SUMMARY_MD,


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
