"""Snakemake adapter of rule render_summary -> trtflow.stages.report.render_summary."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.report import render_summary

    run_stage(
        lambda: render_summary(
            smk.output.csv,
            smk.output.md,
            pb_manifests=list(smk.input.pb_manifests),
            raw_manifests=list(smk.input.raw_manifests),
            patched_manifests=list(smk.input.patched_manifests),
            parity=list(smk.input.parity),
            bench=list(smk.input.bench),
            int8_bench=list(smk.input.get("int8_bench", [])),
            int8_gate=list(smk.input.get("int8_gate", [])),
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
