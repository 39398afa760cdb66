"""Snakemake adapter of rule export_pb -> trtflow.stages.export.export_pb."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.export import export_pb

    m = smk.params.model
    run_stage(
        lambda: export_pb(
            smk.input.source,
            smk.output.pb,
            source=m["source"],
            image_size=m["image_size"],
            input_name=m["input_name"],
            output_name=m["output_name"],
            manifest_path=smk.output.manifest,
            box_format=m["box_format"],
            decode_layout=m["decode_layout"],
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
