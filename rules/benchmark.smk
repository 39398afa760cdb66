# Stage "benchmark_onnx" [convert host]: ONNX Runtime latency of the patched ONNX on CPU.


rule benchmark_onnx:
    input:
        onnx=ONNX_PATCHED,
    output:
        report=BENCH_ONNX,
    log:
        log_of("benchmark_onnx", "{model}/{imgsz}/b{batch}"),
    benchmark:
        bench_of("benchmark_onnx", "{model}/{imgsz}/b{batch}")
    conda:
        "../envs/trtflow.yaml"
    threads: get_bench_threads
    resources:
        host_role=ROLE_CONVERT,
    params:
        bench=config["benchmark"],
        code=code_hash("benchmark_onnx"),
    script:
        "../scripts/benchmark_onnx.py"
