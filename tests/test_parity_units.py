"""Parity tolerances: one unit for every output field and box format."""

from __future__ import annotations

import numpy as np
import pytest


def test_parity_tolerance_is_in_each_fields_own_unit():
    """The same drift passes or fails alike whether boxes are 0-1 or pixels: the tolerance is a
    fraction of each field's unit (image size for pixel boxes, 1 for 0-1 boxes and scores)."""
    from trtflow.onnx.compare import box_scale, field_errors

    rng = np.random.default_rng(0)
    size = 640
    ref = rng.random((1, 50, 8)).astype(np.float32)  # normalised xywh + obj + 3 classes
    for drift, expect in ((2e-4, True), (3e-3, False)):  # of the unit: below / above atol 1e-3
        got = ref.copy()
        got[..., :4] += drift
        norm = field_errors(got, ref, 1e-3, 1e-4, box_scale("normalized", size))
        px_ref, px_got = ref.copy(), got.copy()
        px_ref[..., :4] *= size
        px_got[..., :4] *= size
        px = field_errors(px_got, px_ref, 1e-3, 1e-4, box_scale("pixels", size))
        assert norm["ok"] is px["ok"] is expect
        assert norm["fields"]["boxes"]["max_abs_in_scale"] == pytest.approx(
            px["fields"]["boxes"]["max_abs_in_scale"], rel=1e-3
        )
        assert norm["fields"]["scores"]["ok"]  # the scores did not move
    bad_scores = ref.copy()
    bad_scores[..., 5] += 0.01
    r = field_errors(bad_scores, ref, 1e-3, 1e-4, size)
    assert not r["ok"] and r["fields"]["boxes"]["ok"] and r["mismatched"] == 50
