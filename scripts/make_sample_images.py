"""Snakemake adapter of rule make_sample_images -> trtflow.stages.quantize.make_sample_images."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.quantize import make_sample_images

    run_stage(
        lambda: make_sample_images(
            smk.output.images, count=smk.params.images, seed=smk.params.seed
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
