"""Snakemake adapter of rule check_gates -> trtflow.stages.report.check_gates."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.report import check_gates

    run_stage(
        lambda: check_gates(list(smk.input.gates), smk.output.gates),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
