"""Snakemake adapter of rule preflight_engine -> trtflow.stages.engine.preflight."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.engine import preflight

    p = smk.params.preflight
    run_stage(
        lambda: preflight(
            smk.input.onnx,
            smk.output.report,
            tensorrt=p["tensorrt"],
            target=smk.wildcards.target,
            dynamic=p["dynamic"],
            patches=p["patches"],
            backend=p["backend"],
            sources=[smk.input[k] for k in ("qdq_onnx", "fp16_onnx") if k in smk.input.keys()],
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
