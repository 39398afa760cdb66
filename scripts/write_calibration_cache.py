"""Snakemake adapter of rule write_calibration_cache -> trtflow.quant.qdq."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.quantize import write_trt_calibration_cache

    run_stage(
        lambda: write_trt_calibration_cache(
            smk.input.ranges,
            smk.output.cache,
            trt_version=smk.wildcards.trt,
            trt_cache_algorithm=smk.params.trt_cache_algorithm,
            manifest_path=smk.output.manifest,
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
