# Stage "parity" [convert host]: TF vs raw ONNX vs patched ONNX on the same inputs.


rule check_parity:
    input:
        pb=PB,
        pb_manifest=manifest(PB),
        raw=ONNX_RAW,
        patched=ONNX_PATCHED,
        patched_manifest=manifest(ONNX_PATCHED),
    output:
        report=PARITY,
    log:
        log_of("check_parity"),
    benchmark:
        bench_of("check_parity")
    conda:
        "../envs/trtflow.yaml"
    resources:
        host_role=ROLE_CONVERT,
    params:
        parity=get_parity_params,
        code=code_hash("check_parity"),
    script:
        "../scripts/check_parity.py"
