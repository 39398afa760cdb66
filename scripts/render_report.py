"""Snakemake adapter of rule render_report -> trtflow.stages.report.render_report."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.reporting.pages import PLOTS
    from trtflow.stages.report import render_report

    results = ("patched_manifests", "parity", "bench", "int8_manifests", "int8_bench",
               "int8_gate", "engine_manifests", "engine_bench", "engine_parity")  # fmt: skip
    run_stage(
        lambda: render_report(
            smk.output.zoo,
            {name: smk.output[name] for name in PLOTS},
            smk.output.models,
            smk.output.targets,
            summary_csv=smk.input.summary,
            manifests=list(smk.input.manifests),
            missing=dict(smk.params.missing),
            **{name: list(smk.input.get(name, [])) for name in results},
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
