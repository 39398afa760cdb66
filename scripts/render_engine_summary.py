"""Snakemake adapter of rule render_engine_summary -> trtflow.stages.report."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.report import render_engine_summary

    run_stage(
        lambda: render_engine_summary(
            smk.output.csv,
            smk.output.md,
            manifests=list(smk.input.manifests),
            bench=list(smk.input.bench),
            parity=list(smk.input.parity),
            not_run=dict(smk.params.not_run),
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
