"""Snakemake adapter of rule quantize_onnx -> trtflow.stages.quantize.quantize_onnx."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.quantize import quantize_onnx

    q = smk.params.int8
    run_stage(
        lambda: quantize_onnx(
            smk.input.onnx,
            smk.input.calib,
            smk.output.onnx,
            smk.output.ranges,
            method=q["method"],
            percentile=q["percentile"],
            float_decode=q["float_decode"],
            float_head_convs=q["float_head_convs"],
            float_nodes=q["float_nodes"],
            manifest_path=smk.output.manifest,
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
