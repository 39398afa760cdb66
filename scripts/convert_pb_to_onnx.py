"""Snakemake adapter of rule convert_pb_to_onnx -> trtflow.stages.convert.convert_pb_to_onnx."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.convert import convert_pb_to_onnx

    run_stage(
        lambda: convert_pb_to_onnx(
            smk.input.pb,
            smk.output.onnx,
            opset=smk.params.opset,
            manifest_path=smk.output.manifest,
            pb_manifest=smk.input.pb_manifest,
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
