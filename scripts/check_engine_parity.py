"""Snakemake adapter of rule check_engine_parity -> trtflow.stages.engine.check_engine_parity."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.config import published_config_files
    from trtflow.core.runner import run_stage
    from trtflow.stages.engine import check_engine_parity

    target = smk.wildcards.target
    run_stage(
        lambda: check_engine_parity(
            smk.input.engine,
            smk.input.manifest,
            smk.input.onnx,
            smk.output.report,
            target=target,
            spec=smk.config["targets"][target],
            tolerance={smk.wildcards.precision: dict(smk.params.tolerance)},
            seed=smk.params.seed,
            config=published_config_files(),
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
