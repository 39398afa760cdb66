# Stage "pictures" [convert host]: labelled validation images with the detections of TF, the fp32
# ONNX and the INT8 ONNX drawn side by side, for the report.


rule render_pictures:
    input:
        unpack(get_picture_labels),
        pb=PB,
        pb_manifest=manifest(PB),
        fp32=ONNX_PATCHED,
        int8=INT8_QDQ,
    output:
        pictures=directory(PICTURES),
    log:
        log_of("render_pictures"),
    benchmark:
        bench_of("render_pictures")
    conda:
        "../envs/trtflow.yaml"
    resources:
        host_role=ROLE_CONVERT,
    params:
        threads=config["benchmark"]["threads"],
        code=code_hash("render_pictures"),
    script:
        "../scripts/render_pictures.py"
