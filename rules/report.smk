# Stage "report" [convert host]: results/summary.csv and results/summary.md.


rule render_summary:
    input:
        pb_manifests=zoo(manifest(PB)),
        raw_manifests=zoo(manifest(ONNX_RAW)),
        patched_manifests=zoo(manifest(ONNX_PATCHED)),
        parity=zoo(PARITY),
        bench=zoo(BENCH_ONNX),
        int8_bench=int8_zoo(BENCH_INT8),
        int8_gate=int8_zoo(INT8_GATE),
    output:
        csv=SUMMARY_CSV,
        md=SUMMARY_MD,
    log:
        "logs/render_summary/summary.log",
    benchmark:
        "benchmarks/render_summary/summary.tsv"
    conda:
        "../envs/trtflow.yaml"
    resources:
        host_role=ROLE_CONVERT,
    params:
        code=code_hash("summary"),
    script:
        "../scripts/render_summary.py"


# The engines of every target: size and build time; latency and parity where they ran, else
# why not (a TensorRT-RTX engine built here without a GPU of its architectures).
rule render_engine_summary:
    input:
        manifests=engine_zoo(manifest(ENGINE)),
        bench=engine_zoo(ENGINE_BENCH, runnable_only=True),
        parity=engine_zoo(ENGINE_PARITY, runnable_only=True),
    output:
        csv=ENGINE_SUMMARY_CSV,
        md=ENGINE_SUMMARY_MD,
    log:
        "logs/render_engine_summary/summary.log",
    benchmark:
        "benchmarks/render_engine_summary/summary.tsv"
    conda:
        "../envs/trtflow.yaml"
    resources:
        host_role=ROLE_TARGET,
    params:
        not_run=get_not_run_targets,
        code=code_hash("summary"),
    script:
        "../scripts/render_engine_summary.py"
