"""Snakemake adapter of rule benchmark_onnx -> trtflow.bench.benchmark_onnx."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.bench import benchmark_onnx
    from trtflow.runner import run_stage

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
