"""Snakemake adapter of rule check_parity -> trtflow.stages.parity.check_parity."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.parity import check_parity

    p = smk.params.parity
    run_stage(
        lambda: check_parity(
            smk.input.pb,
            smk.input.pb_manifest,
            smk.input.raw,
            smk.input.patched,
            smk.input.patched_manifest,
            smk.output.report,
            image_size=p["image_size"],
            seed=p["seed"],
            batch=p["batch"],
            atol=p["atol"],
            rtol=p["rtol"],
            box_format=p["box_format"],
            enforce=False,  # the verdict is data; rule check_gates fails the run
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
