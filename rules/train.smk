# Stage "train" [train host]: the built-in labelled shapes set, and the YOLOv5 recipe on it (or on
# the user's YOLO / COCO data) -> results/train/{model}/{imgsz}/model.weights.h5.


rule make_dataset:
    output:
        dataset=directory(DATASET),
    log:
        "logs/make_dataset/builtin.log",
    benchmark:
        "benchmarks/make_dataset/builtin.tsv"
    conda:
        "../envs/trtflow.yaml"
    threads: 2
    resources:
        host_role=ROLE_TRAIN,
    params:
        dataset=config["dataset"],
        code=code_hash("make_dataset"),
    script:
        "../scripts/make_dataset.py"


# The resume state (params.checkpoint, outside results/) is not an output: Snakemake deletes a
# failed job's outputs, and a killed run must find it to continue after its last epoch.
rule train_model:
    input:
        unpack(get_train_inputs),
    output:
        weights=TRAINED,
        manifest=manifest(TRAINED),
    log:
        log_of("train_model"),
    benchmark:
        bench_of("train_model")
    conda:
        "../envs/trtflow.yaml"
    threads: 8
    resources:
        host_role=ROLE_TRAIN,
    params:
        train=get_train_params,
        code=code_hash("train_model"),
    script:
        "../scripts/train_model.py"
