"""Snakemake adapter of rule build_engine -> trtflow.stages.engine.build_engine.

The target's connection details (host, user, port, trtexec path) come from the config, not
from params, so that moving a device to a new address does not rebuild its engines.
"""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.config import published_config_files
    from trtflow.core.runner import run_stage
    from trtflow.stages.engine import build_engine

    target = smk.wildcards.target
    b = smk.params.build
    run_stage(
        lambda: build_engine(
            smk.input.onnx,
            smk.output.engine,
            target=target,
            spec=smk.config["targets"][target],
            precision=b["precision"],
            profile=smk.wildcards.profile,
            image_size=b["image_size"],
            timing_cache=smk.params.timing_cache,
            calibration_cache=smk.input.get("calibration_cache"),
            qdq_onnx=smk.input.get("qdq_onnx"),
            fp16_onnx=smk.input.get("fp16_onnx"),
            manifest_path=smk.output.manifest,
            config=published_config_files(),
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
