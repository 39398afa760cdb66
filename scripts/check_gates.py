"""Snakemake adapter of rule check_gates -> trtflow.gates.check_gates."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.gates import check_gates
    from trtflow.runner import run_stage

    run_stage(
        lambda: check_gates(list(smk.input.gates), smk.output.gates),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
