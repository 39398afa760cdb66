"""Stages of rules/train.smk (train host): the built-in labelled dataset and YOLOv5 training.

The recipe is in ``trtflow.tf.training``; datasets in ``trtflow.images.datasets``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from trtflow.core.commands import stage_command
from trtflow.core.errors import TrtflowError
from trtflow.core.manifest import atomic_path, command_line, write_json, write_manifest
from trtflow.images.datasets import SHAPE_CLASSES, coco_json, shapes_image, yolo_lines
from trtflow.tf.training import (
    EMA_DECAY,
    EMA_TAU,
    PREFETCH,
    RECIPE,
    Trainer,
    _lr_at,
    _save_checkpoint,
    evaluate,
)

log = logging.getLogger(__name__)


def make_dataset(
    out_dir: str | Path,
    train_count: int = 6000,
    val_count: int = 500,
    seed: int = 0,
    workers: int = 0,
    manifest_path: str | Path | None = None,
) -> dict[str, Any]:
    """Write the built-in shapes set to ``out_dir`` (YOLO layout + ``val.json``), atomically."""
    from PIL import Image

    started = time.time()
    workers = workers or min(16, max(1, (__import__("os").cpu_count() or 1)))

    def one(args: tuple[Path, str, int]) -> tuple[str, int, int, np.ndarray, np.ndarray]:
        root, split, i = args
        rgb, boxes, classes = shapes_image(seed, split, i)
        name = f"{split}_{i:06d}"
        h, w = rgb.shape[:2]
        Image.fromarray(rgb).save(root / "images" / split / f"{name}.jpg", quality=95)
        (root / "labels" / split / f"{name}.txt").write_text(yolo_lines(boxes, classes, h, w))
        return f"images/{split}/{name}.jpg", h, w, boxes, classes

    counts = {"train": train_count, "val": val_count}
    with atomic_path(out_dir, is_dir=True) as tmp:
        for split in counts:
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
        with ThreadPoolExecutor(workers) as pool:
            done = {s: list(pool.map(one, [(tmp, s, i) for i in range(n)]))
                    for s, n in counts.items()}  # fmt: skip
        write_json(tmp / "val.json", coco_json(done["val"]))
        (tmp / "classes.txt").write_text("".join(f"{n}\n" for n in SHAPE_CLASSES))
    objects = {s: int(sum(len(e[4]) for e in v)) for s, v in done.items()}
    log.info(
        "built-in shapes set (seed %d): %d train / %d val images, %d / %d objects, %d classes "
        "-> %s (%.1f s)", seed, train_count, val_count, objects["train"], objects["val"],
        len(SHAPE_CLASSES), out_dir, time.time() - started,
    )  # fmt: skip
    data = {
        "stage": "make_dataset",
        "artifact": str(out_dir),
        "seed": seed,
        "counts": counts,
        "objects": objects,
        "classes": SHAPE_CLASSES,
        "seconds": round(time.time() - started, 3),
        "command": command_line(
            stage_command(
                "dataset",
                out_dir=out_dir,
                train_count=train_count,
                val_count=val_count,
                seed=seed,
                workers=workers,
            )
        ),  # fmt: skip
    }
    if manifest_path:
        write_json(manifest_path, data)
    return data


def train_yolov5(
    train_data: str | Path,
    val_data: str | Path,
    out_weights: str | Path,
    variant: str = "n",
    classes: int = 8,
    image_size: int = 320,
    epochs: int = 40,
    batch: int = 64,
    seed: int = 0,
    workers: int = 8,
    cos_lr: bool = True,
    max_steps: int = 0,
    val_count: int = 0,
    val_interval: int = 10,
    hyp: dict[str, float] | None = None,
    checkpoint: str | Path | None = None,
    manifest_path: str | Path | None = None,
    on_epoch: Any = None,
) -> dict[str, Any]:
    """Train the built-in YOLOv5``variant`` and write the EMA weights to ``out_weights``.

    ``max_steps`` > 0 stops each epoch after that many steps (tests, smoke runs); ``val_count``
    > 0 validates on the first that many validation images, every ``val_interval`` epochs and
    after the last. ``hyp`` overrides entries of ``RECIPE`` and ``trtflow.images.augment.HYP``.
    ``checkpoint`` (default ``<out>.ckpt.npz``) is the resume state: written after every epoch,
    used by a rerun with the same arguments, removed once the weights are written.
    ``on_epoch(model_with_ema_weights, row)``, if given, runs after every epoch.
    Returns the report (history per epoch).
    """
    import keras

    from trtflow.images import augment
    from trtflow.images.datasets import read_split
    from trtflow.tf import yolov5

    started = time.time()
    out_weights = Path(out_weights)
    if not out_weights.name.endswith(".weights.h5"):
        raise TrtflowError(f"{out_weights} does not end in .weights.h5", "name it <x>.weights.h5")
    hyp = {**RECIPE, **augment.HYP, **(hyp or {})}
    unknown = set(hyp) - set(RECIPE) - set(augment.HYP)
    if unknown:
        raise TrtflowError(
            f"unknown training hyperparameters {sorted(unknown)}",
            f"use keys of {sorted({**RECIPE, **augment.HYP})}",
        )
    ckpt = Path(checkpoint) if checkpoint else out_weights.with_name(out_weights.name + ".ckpt.npz")
    train_samples = read_split(train_data, classes)
    val_samples = read_split(val_data, classes)
    if val_count:
        val_samples = val_samples[:val_count]
    steps_per_epoch = len(train_samples) // batch
    if steps_per_epoch < 1:
        raise TrtflowError(
            f"{train_data} has {len(train_samples)} images, fewer than one batch of {batch}",
            "lower the batch size or add images",
        )
    if max_steps:
        steps_per_epoch = min(steps_per_epoch, max_steps)
    log.info(
        "train yolov5%s, %d classes, %d px, backend %s: %d train images (%s), %d val (%s); "
        "%d epochs x %d steps of %d",
        variant,
        classes,
        image_size,
        keras.backend.backend(),
        len(train_samples),
        train_data,
        len(val_samples),
        val_data,
        epochs,
        steps_per_epoch,
        batch,
    )

    model = yolov5.build_yolov5(variant, classes, image_size, seed)
    trainer = Trainer(model, classes, image_size, hyp, batch)
    aug_train = augment.Augmenter(train_samples, image_size, hyp)
    aug_val = augment.Augmenter(val_samples, image_size, hyp)
    history: list[dict[str, Any]] = []
    first_epoch, updates = 0, 0
    fingerprint = hashlib.sha256(
        json.dumps(
            [
                str(train_data),
                str(val_data),
                variant,
                classes,
                image_size,
                epochs,
                batch,
                seed,
                cos_lr,
                max_steps,
                hyp,
            ],
            sort_keys=True,
        ).encode()
    ).hexdigest()
    if ckpt.is_file():
        with np.load(ckpt, allow_pickle=False) as data:
            stale = str(data["fingerprint"]) != fingerprint
        if stale:
            log.warning("%s is from a run with other arguments; starting afresh", ckpt)
            ckpt.unlink()
    if ckpt.is_file():
        with np.load(ckpt, allow_pickle=False) as data:
            trainer.load_arrays(data)
            first_epoch = int(data["epoch"]) + 1
            updates = int(data["updates"])
            keys = data["history_keys"].tolist()
            history = [
                {
                    k: None if v != v else (int(v) if k == "epoch" else v)
                    for k, v in zip(keys, row, strict=True)
                }
                for row in data["history"].tolist()
            ]
        log.info("resuming from %s after epoch %d (%d updates)", ckpt, first_epoch - 1, updates)

    with ThreadPoolExecutor(max(1, workers)) as pool, ThreadPoolExecutor(PREFETCH) as batches:
        t0 = time.time()
        aug_train.preload(pool)
        aug_val.preload(pool)
        val = [aug_val.val_sample(i) for i in range(len(val_samples))]
        val_images = np.stack([v[0] for v in val])
        val_labels = [v[1] for v in val]
        log.info("images loaded in %.1f s", time.time() - t0)

        def make_batch(epoch: int, k: int, order: np.ndarray) -> tuple[np.ndarray, list]:
            ids = order[k * batch : (k + 1) * batch]
            rngs = [np.random.default_rng([seed, epoch, k, j]) for j in range(len(ids))]
            out = list(pool.map(aug_train.train_sample, ids, rngs))
            x = np.stack([o[0] for o in out])
            gains = np.stack([o[2] for o in out]).astype(np.float32)
            t = augment.build_targets(
                [o[1] for o in out], image_size, yolov5.ANCHORS, yolov5.STRIDES, hyp["anchor_t"]
            )
            return x, gains, t

        for epoch in range(first_epoch, epochs):
            e0 = time.time()
            order = np.random.default_rng([seed, epoch]).permutation(len(train_samples))
            pending = deque(
                batches.submit(make_batch, epoch, k, order)
                for k in range(min(PREFETCH, steps_per_epoch))
            )
            sums = np.zeros(3)
            for k in range(steps_per_epoch):
                x, gains, t = pending.popleft().result()
                if k + PREFETCH < steps_per_epoch:
                    pending.append(batches.submit(make_batch, epoch, k + PREFETCH, order))
                step = epoch * steps_per_epoch + k
                lr = _lr_at(step, epoch, steps_per_epoch, epochs, hyp, cos_lr)
                updates += 1
                decay = EMA_DECAY * (1 - math.exp(-updates / EMA_TAU))
                sched = np.array([*lr, decay], np.float32)
                trainer.state, parts = trainer.step(trainer.state, x, gains, t, sched)
                sums += np.asarray(keras.ops.convert_to_numpy(parts), np.float64)
                if not np.isfinite(sums).all():
                    raise TrtflowError(
                        f"training diverged at epoch {epoch} step {k} (loss {sums.tolist()})",
                        "lower train.lr0 or check the labels",
                    )
            seconds = time.time() - e0
            maps: dict[str, Any] = {"map50": None, "map50_95": None}
            if (epoch + 1) % max(1, val_interval) == 0 or epoch + 1 == epochs:
                maps = evaluate(
                    lambda xb: trainer.infer(trainer.state["ema"], xb),
                    val_images,
                    val_labels,
                    classes,
                )
            box, obj, cls = (sums / steps_per_epoch).tolist()
            row = {
                "epoch": epoch,
                "box": box,
                "obj": obj,
                "cls": cls,
                "lr": float(lr[0]),
                "map50": maps["map50"],
                "map50_95": maps["map50_95"],
                "images_per_s": steps_per_epoch * batch / seconds,
                "seconds": seconds,
            }
            history.append(row)
            val_text = (
                "val mAP@.5 {map50:.4f} mAP@.5:.95 {map50_95:.4f}".format(**maps)
                if maps["map50"] is not None
                else "val -"
            )
            log.info(
                "epoch %d/%d: box %.4f obj %.4f cls %.4f lr %.5f | %s | %.0f img/s, %.1f s",
                epoch + 1,
                epochs,
                box,
                obj,
                cls,
                lr[0],
                val_text,
                row["images_per_s"],
                seconds,
            )
            _save_checkpoint(ckpt, trainer, epoch, updates, history, fingerprint)
            if on_epoch is not None:
                trainer.assign_ema()
                on_epoch(model, row)

    trainer.assign_ema()
    out_weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_weights.with_name(f".tmp-{out_weights.name}")  # Keras wants *.weights.h5
    try:
        model.save_weights(str(tmp))
        tmp.replace(out_weights)
    finally:
        tmp.unlink(missing_ok=True)
    ckpt.unlink(missing_ok=True)
    report = {
        "history": history,
        "final": history[-1] if history else {},
        "seconds": round(time.time() - started, 1),
    }
    options = {
        "variant": variant,
        "classes": classes,
        "image_size": image_size,
        "epochs": epochs,
        "batch": batch,
        "seed": seed,
        "cos_lr": cos_lr,
        "max_steps": max_steps,
        "val_count": val_count,
        "hyp": hyp,
        "backend": keras.backend.backend(),
    }
    command = stage_command(
        "train", train_data=train_data, val_data=val_data, out_weights=out_weights,
        variant=variant, classes=classes, image_size=image_size, epochs=epochs, batch=batch,
        seed=seed, workers=workers, cos_lr=cos_lr, max_steps=max_steps, val_count=val_count,
        val_interval=val_interval, hyp=hyp, checkpoint=checkpoint,
    )  # fmt: skip
    if manifest_path:
        write_manifest(
            out_weights,
            stage="train",
            inputs={},
            options=options,
            command=command,
            started=started,
            extra=report,
            manifest_path=manifest_path,
        )
    return report
