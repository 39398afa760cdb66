# Stage "export" [train host]: Keras YOLOv5 -> SavedModel -> frozen GraphDef (model.pb).


rule export_saved_model:
    input:
        get_saved_model_sources,
    output:
        saved_model=directory(SAVED_MODEL),
        manifest=manifest(SAVED_MODEL),
    log:
        log_of("export_saved_model"),
    benchmark:
        bench_of("export_saved_model")
    conda:
        "../envs/trtflow.yaml"
    resources:
        host_role=ROLE_TRAIN,
    params:
        model=get_export_params,
        code=code_hash("export_saved_model"),
    script:
        "../scripts/export_saved_model.py"


rule export_pb:
    input:
        source=get_pb_source,
    output:
        pb=PB,
        manifest=manifest(PB),
    log:
        log_of("export_pb"),
    benchmark:
        bench_of("export_pb")
    conda:
        "../envs/trtflow.yaml"
    resources:
        host_role=ROLE_TRAIN,
    params:
        model=get_export_params,
        code=code_hash("export_pb"),
    script:
        "../scripts/export_pb.py"
