"""Snakemake adapter of rule benchmark_onnx -> trtflow.stages.benchmark.benchmark_onnx."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.benchmark import benchmark_onnx

    b = smk.params.bench
    run_stage(
        lambda: benchmark_onnx(
            smk.input.onnx,
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
