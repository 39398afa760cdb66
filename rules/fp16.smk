# Stage "fp16" [convert host]: the patched ONNX in fp16 for strongly typed builders
# (TensorRT-RTX has no fp16 flag; its fp16 engines are built from this ONNX).


rule convert_onnx_to_fp16:
    input:
        onnx=ONNX_PATCHED,
        manifest=manifest(ONNX_PATCHED),
    output:
        onnx=ONNX_FP16,
        manifest=manifest(ONNX_FP16),
    log:
        log_of("convert_onnx_to_fp16"),
    benchmark:
        bench_of("convert_onnx_to_fp16")
    conda:
        "../envs/trtflow.yaml"
    resources:
        host_role=ROLE_CONVERT,
    params:
        code=code_hash("convert_onnx_to_fp16"),
    script:
        "../scripts/convert_onnx_to_fp16.py"
