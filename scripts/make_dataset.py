"""Snakemake adapter of rule make_dataset -> trtflow.stages.train.make_dataset."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.train import make_dataset

    d = smk.params.dataset
    run_stage(
        lambda: make_dataset(
            smk.output.dataset,
            train_count=d["train_count"],
            val_count=d["val_count"],
            seed=d["seed"],
            workers=smk.threads,
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
