# Stage "int8" [convert host]: calibration data -> Q/DQ ONNX (+ TensorRT calibration caches),
# checked against fp32 on held-aside images and timed side by side on the CPU.


rule make_sample_images:
    output:
        images=directory(SAMPLE_IMAGES),
    log:
        "logs/make_sample_images/builtin.log",
    benchmark:
        "benchmarks/make_sample_images/builtin.tsv"
    conda:
        "../envs/trtflow.yaml"
    resources:
        host_role=ROLE_CONVERT,
    params:
        images=config["calibration"]["count"] + config["calibration"]["holdout"],
        seed=config["calibration"]["seed"],
        code=code_hash("make_sample_images"),
    script:
        "../scripts/make_sample_images.py"


rule make_calibration_data:
    input:
        images=get_calibration_images,
    output:
        calib=CALIB,
        holdout=CALIB_HOLDOUT,
        manifest=manifest(CALIB),
    log:
        log_of("make_calibration_data"),
    benchmark:
        bench_of("make_calibration_data")
    conda:
        "../envs/trtflow.yaml"
    resources:
        host_role=ROLE_CONVERT,
    params:
        calib=get_calibration_params,
        listing=get_calibration_listing,
        code=code_hash("make_calibration_data"),
    script:
        "../scripts/make_calibration_data.py"


rule quantize_onnx:
    input:
        onnx=ONNX_PATCHED,
        calib=CALIB,
    output:
        onnx=INT8_QDQ,
        ranges=INT8_RANGES,
        manifest=manifest(INT8_QDQ),
    log:
        log_of("quantize_onnx"),
    benchmark:
        bench_of("quantize_onnx")
    conda:
        "../envs/trtflow.yaml"
    resources:
        host_role=ROLE_CONVERT,
    params:
        int8=config["int8"],
        code=code_hash("quantize_onnx"),
    script:
        "../scripts/quantize_onnx.py"


rule write_calibration_cache:
    input:
        ranges=INT8_RANGES,
    output:
        cache=INT8_TRT_CACHE,
        manifest=manifest(INT8_TRT_CACHE),
    log:
        log_of("write_calibration_cache", "{model}/{imgsz}/trt{trt}"),
    benchmark:
        bench_of("write_calibration_cache", "{model}/{imgsz}/trt{trt}")
    wildcard_constraints:
        trt=r"\d+(\.\d+){1,3}",
    conda:
        "../envs/trtflow.yaml"
    resources:
        host_role=ROLE_CONVERT,
    params:
        trt_cache_algorithm=config["int8"]["trt_cache_algorithm"],
        code=code_hash("write_calibration_cache"),
    script:
        "../scripts/write_calibration_cache.py"


rule check_int8_accuracy:
    input:
        unpack(get_int8_gate_inputs),
        unpack(get_builtin_labels),
        fp32=ONNX_PATCHED,
        int8=INT8_QDQ,
        holdout=CALIB_HOLDOUT,
    output:
        report=INT8_GATE,
    log:
        log_of("check_int8_accuracy"),
    benchmark:
        bench_of("check_int8_accuracy")
    conda:
        "../envs/trtflow.yaml"
    resources:
        host_role=ROLE_CONVERT,
    params:
        gate=config["int8"]["gate"],
        threads=config["benchmark"]["threads"],
        code=code_hash("check_int8_accuracy"),
    script:
        "../scripts/check_int8_accuracy.py"


rule benchmark_int8:
    input:
        fp32=ONNX_PATCHED,
        int8=INT8_QDQ,
    output:
        report=BENCH_INT8,
    log:
        log_of("benchmark_int8", "{model}/{imgsz}/b{batch}"),
    benchmark:
        bench_of("benchmark_int8", "{model}/{imgsz}/b{batch}")
    conda:
        "../envs/trtflow.yaml"
    threads: get_bench_threads
    resources:
        host_role=ROLE_CONVERT,
    params:
        bench=config["benchmark"],
        code=code_hash("benchmark_int8"),
    script:
        "../scripts/benchmark_int8.py"
