"""Snakemake adapter of rule benchmark_engine -> trtflow.stages.engine.benchmark_engine."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.config import published_config_files
    from trtflow.core.runner import run_stage
    from trtflow.stages.engine import benchmark_engine

    target = smk.wildcards.target
    b = smk.params.bench
    run_stage(
        lambda: benchmark_engine(
            smk.input.engine,
            smk.input.manifest,
            smk.output.report,
            target=target,
            spec=smk.config["targets"][target],
            warmup_ms=b["warmup_ms"],
            iterations=b["iterations"],
            duration_s=b["duration_s"],
            use_cuda_graph=b["use_cuda_graph"],
            no_data_transfers=b["no_data_transfers"],
            profile_layers=b["profile_layers"],
            config=published_config_files(),
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
