# Stage "report" [convert host]: results/summary.csv and results/summary.md, the pages and plots
# of `snakemake --report` (captions in report/), then the gates: a failed check writes its
# verdict and the run fails here, after the summary and the report that list it are written.


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
        csv=report(SUMMARY_CSV, caption="../report/summary.rst", category="1. Zoo"),
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
        code=code_hash("render_summary"),
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
        code=code_hash("render_engine_summary"),
    script:
        "../scripts/render_engine_summary.py"


rule render_report:
    input:
        unpack(get_report_engine_results),
        summary=SUMMARY_CSV,
        manifests=get_report_manifests,
        patched_manifests=zoo(manifest(ONNX_PATCHED)),
        parity=zoo(PARITY),
        bench=zoo(BENCH_ONNX),
        int8_manifests=int8_zoo(manifest(INT8_QDQ)),
        int8_bench=int8_zoo(BENCH_INT8),
        int8_gate=int8_zoo(INT8_GATE),
    output:
        zoo=report(REPORT_ZOO, caption="../report/zoo.rst", category="1. Zoo"),
        latency=report(
            REPORT_PLOT.format(name="latency"),
            caption="../report/latency.rst",
            category="2. Stages",
            subcategory="benchmark",
        ),
        accuracy_vs_latency=report(
            REPORT_PLOT.format(name="accuracy_vs_latency"),
            caption="../report/accuracy_vs_latency.rst",
            category="2. Stages",
            subcategory="benchmark",
        ),
        int8_agreement=report(
            REPORT_PLOT.format(name="int8_agreement"),
            caption="../report/int8_agreement.rst",
            category="2. Stages",
            subcategory="int8",
        ),
        build_times=report(
            REPORT_PLOT.format(name="build_times"),
            caption="../report/build_times.rst",
            category="2. Stages",
            subcategory="build",
        ),
        models=report(
            directory(REPORT_MODELS),
            patterns=["{model}/{imgsz}.html"],
            caption="../report/model.rst",
            category="3. Models",
            subcategory="{model}",
        ),
        targets=report(
            directory(REPORT_TARGETS),
            patterns=["{target}.html"],
            caption="../report/target.rst",
            category="4. Targets",
            subcategory="{target}",
        ),
    log:
        "logs/render_report/report.log",
    benchmark:
        "benchmarks/render_report/report.tsv"
    conda:
        "../envs/trtflow.yaml"
    resources:
        host_role=ROLE_CONVERT,
    params:
        missing=get_report_missing,
        code=code_hash("render_report"),
    script:
        "../scripts/render_report.py"


rule check_gates:
    input:
        gates=zoo(PARITY) + int8_zoo(INT8_GATE),
        # not read: they make a failed gate fail the run only once the pages that list it exist
        summary=SUMMARY_MD,
        report=REPORT_ZOO,
    output:
        gates=GATES,
    log:
        "logs/check_gates/gates.log",
    benchmark:
        "benchmarks/check_gates/gates.tsv"
    conda:
        "../envs/trtflow.yaml"
    resources:
        host_role=ROLE_CONVERT,
    params:
        code=code_hash("check_gates"),
    script:
        "../scripts/check_gates.py"
