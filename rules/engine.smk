# Stage "engine": preflight [convert host], then build, benchmark and parity [target host].
# The target's declared TensorRT version/device and every build option are params, so a change
# to any of them rebuilds exactly the affected engines; how a target is reached (host, user,
# port, trtexec path) is read from the config at run time and never triggers a rebuild.
# The manifest's reproduce command passes the config file(s) merged (config.yaml, then each
# --configfile) and Snakemake's --config overrides (trtflow.core.config.publish_config_files)
# as --config to find the target.


rule preflight_engine:
    input:
        unpack(get_preflight_sources),
        onnx=ONNX_PATCHED,
        manifest=manifest(ONNX_PATCHED),
    output:
        report=PREFLIGHT,
    log:
        log_of("preflight_engine", "{target}/{model}/{imgsz}"),
    benchmark:
        bench_of("preflight_engine", "{target}/{model}/{imgsz}")
    conda:
        "../envs/trtflow.yaml"
    resources:
        host_role=ROLE_CONVERT,
    params:
        preflight=get_preflight_params,
        code=code_hash("preflight_engine"),
    script:
        "../scripts/preflight_engine.py"


rule build_engine:
    input:
        unpack(get_int8_inputs),
        unpack(get_fp16_inputs),
        onnx=ONNX_PATCHED,
        preflight=PREFLIGHT,
    output:
        engine=ENGINE,
        manifest=manifest(ENGINE),
    log:
        log_of("build_engine", ENGINE_WILDCARDS),
    benchmark:
        bench_of("build_engine", ENGINE_WILDCARDS)
    conda:
        "../envs/trtflow.yaml"
    resources:
        host_role=ROLE_TARGET,
    params:
        target=get_target_params,
        build=get_build_params,
        timing_cache=get_timing_cache,
        code=code_hash("build_engine"),
    script:
        "../scripts/build_engine.py"


rule benchmark_engine:
    input:
        engine=ENGINE,
        manifest=manifest(ENGINE),
    output:
        report=ENGINE_BENCH,
    log:
        log_of("benchmark_engine", ENGINE_WILDCARDS),
    benchmark:
        bench_of("benchmark_engine", ENGINE_WILDCARDS)
    conda:
        "../envs/trtflow.yaml"
    resources:
        host_role=ROLE_TARGET,
    params:
        target=get_target_params,
        bench=get_benchmark_engine_params,
        code=code_hash("benchmark_engine"),
    script:
        "../scripts/benchmark_engine.py"


rule check_engine_parity:
    input:
        engine=ENGINE,
        manifest=manifest(ENGINE),
        onnx=ONNX_PATCHED,
    output:
        report=ENGINE_PARITY,
    log:
        log_of("check_engine_parity", ENGINE_WILDCARDS),
    benchmark:
        bench_of("check_engine_parity", ENGINE_WILDCARDS)
    conda:
        "../envs/trtflow.yaml"
    resources:
        host_role=ROLE_TARGET,
    params:
        target=get_target_params,
        tolerance=get_engine_tolerance,
        seed=config["engine"]["parity"]["seed"],
        code=code_hash("check_engine_parity"),
    script:
        "../scripts/check_engine_parity.py"
