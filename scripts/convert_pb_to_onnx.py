"""Snakemake adapter of rule convert_pb_to_onnx -> trtflow.stages.convert.convert_pb_to_onnx."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.convert import convert_pb_to_onnx
    from trtflow.tf.freeze import pb_io

    def stage():
        io = pb_io(smk.input.pb_manifest)
        return convert_pb_to_onnx(
            smk.input.pb,
            smk.output.onnx,
            io["input_name"],
            io["output_name"],
            opset=smk.params.opset,
            manifest_path=smk.output.manifest,
        )

    run_stage(stage, smk.log[0], model=smk.wildcards.get("model"))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
