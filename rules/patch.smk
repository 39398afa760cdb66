# Stage "patch" [convert host]: the model's patch recipe (trtflow.onnx.patches) on the raw ONNX.


rule patch_onnx:
    input:
        onnx=ONNX_RAW,
        pb_manifest=manifest(PB),
    output:
        onnx=ONNX_PATCHED,
        manifest=manifest(ONNX_PATCHED),
    log:
        log_of("patch_onnx"),
    benchmark:
        bench_of("patch_onnx")
    conda:
        "../envs/trtflow.yaml"
    resources:
        host_role=ROLE_CONVERT,
    params:
        patch=get_patch_params,
        code=code_hash("patch_onnx"),
    script:
        "../scripts/patch_onnx.py"
