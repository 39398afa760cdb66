"""Snakemake adapter of rule check_int8_accuracy -> trtflow.stages.quantize.check_int8_accuracy."""

import sys
from pathlib import Path


def main(smk):
    sys.path.insert(0, str(Path(smk.scriptdir).parent))
    from trtflow.core.runner import run_stage
    from trtflow.stages.quantize import check_int8_accuracy

    g = smk.params.gate
    images, annotations = smk.input.get("eval_images"), smk.input.get("eval_annotations")
    if smk.input.get("dataset"):  # the built-in shapes set's validation split
        images, annotations = smk.input.dataset, str(Path(smk.input.dataset) / "val.json")
    run_stage(
        lambda: check_int8_accuracy(
            smk.input.fp32,
            smk.input.int8,
            smk.input.holdout,
            smk.output.report,
            score_threshold=g["score_threshold"],
            top_k=g["top_k"],
            iou_threshold=g["iou_threshold"],
            max_detections=g["max_detections"],
            min_map50_vs_fp32=g["min_map50_vs_fp32"],
            eval_images=images,
            eval_annotations=annotations,
            eval_count=g["eval_count"],
            max_map_drop=g["max_map_drop"],
            threads=smk.params.threads,
            max_map50_drop=g["max_map50_drop"],
            enforce=False,  # the verdict is data; rule check_gates fails the run
        ),
        smk.log[0],
        model=smk.wildcards.get("model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
