"""Snakemake adapter of rule make_calibration_data -> trtflow.stages.quantize."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.quantize import make_calibration_data

    c = smk.params.calib
    run_stage(
        lambda: make_calibration_data(
            smk.input.images,
            smk.output.calib,
            smk.output.holdout,
            image_size=c["image_size"],
            count=c["count"],
            holdout=c["holdout"],
            seed=c["seed"],
            sampling=c["sampling"],
            manifest_path=smk.output.manifest,
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
