"""Snakemake adapter of rule patch_onnx -> trtflow.stages.patch.patch_onnx."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.patch import patch_onnx

    p = smk.params.patch
    run_stage(
        lambda: patch_onnx(
            smk.input.onnx,
            smk.output.onnx,
            patches=p["patches"],
            image_size=p["image_size"],
            batch=p["batch"],
            box_format=p["box_format"],
            nms=p["nms"],
            manifest_path=smk.output.manifest,
            pb_manifest=smk.input.pb_manifest,
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
