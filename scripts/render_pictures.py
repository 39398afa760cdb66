"""Snakemake adapter of rule render_pictures -> trtflow.stages.pictures.render_pictures."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.pictures import render_pictures

    images, annotations = smk.input.get("eval_images"), smk.input.get("eval_annotations")
    if smk.input.get("dataset"):  # the built-in shapes set's validation split
        images, annotations = smk.input.dataset, str(Path(smk.input.dataset) / "val.json")
    run_stage(
        lambda: render_pictures(
            smk.input.pb,
            smk.input.pb_manifest,
            smk.input.fp32,
            smk.input.int8,
            images,
            annotations,
            smk.output.pictures,
            image_size=int(smk.wildcards.imgsz),
            threads=smk.params.threads,
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
