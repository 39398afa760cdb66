"""Snakemake adapter of rule convert_onnx_to_fp16 -> trtflow.stages.fp16.convert_onnx_to_fp16."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.fp16 import convert_onnx_to_fp16

    run_stage(
        lambda: convert_onnx_to_fp16(
            smk.input.onnx, smk.output.onnx, manifest_path=smk.output.manifest
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
