"""Snakemake adapter of rule train_model -> trtflow.stages.train.train_yolov5."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.train import train_yolov5

    t = smk.params.train
    run_stage(
        lambda: train_yolov5(
            t["train_data"],
            t["val_data"],
            smk.output.weights,
            variant=t["variant"],
            classes=t["classes"],
            image_size=t["image_size"],
            epochs=t["epochs"],
            batch=t["batch"],
            seed=t["seed"],
            workers=smk.threads,
            cos_lr=t["cos_lr"],
            val_interval=t["val_interval"],
            hyp=t["hyp"],
            checkpoint=t["checkpoint"],
            manifest_path=smk.output.manifest,
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
