# Stage "convert" [convert host]: frozen GraphDef -> ONNX with tf2onnx.


rule convert_pb_to_onnx:
    input:
        pb=PB,
        pb_manifest=manifest(PB),
    output:
        onnx=ONNX_RAW,
        manifest=manifest(ONNX_RAW),
    log:
        log_of("convert_pb_to_onnx"),
    benchmark:
        bench_of("convert_pb_to_onnx")
    conda:
        "../envs/trtflow.yaml"
    resources:
        host_role=ROLE_CONVERT,
    params:
        opset=config["onnx"]["opset"],
        code=code_hash("convert_pb_to_onnx"),
    script:
        "../scripts/convert_pb_to_onnx.py"
