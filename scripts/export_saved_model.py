"""Snakemake adapter of rule export_saved_model -> trtflow.stages.export.export_saved_model."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.export import export_saved_model

    m = smk.params.model
    run_stage(
        lambda: export_saved_model(
            smk.output.saved_model,
            source=m["source"],
            image_size=m["image_size"],
            variant=m["variant"],
            classes=m["classes"],
            seed=m["seed"],
            path=m["path"],
            manifest_path=smk.output.manifest,
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
