"""Snakemake adapter of rule benchmark_int8 -> trtflow.stages.quantize.benchmark_int8."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.quantize import benchmark_int8

    b = smk.params.bench
    run_stage(
        lambda: benchmark_int8(
            smk.input.fp32,
            smk.input.int8,
            smk.output.report,
            batch=int(smk.wildcards.batch),
            warmup=b["warmup"],
            iterations=b["iterations"],
            threads=b["threads"],
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
