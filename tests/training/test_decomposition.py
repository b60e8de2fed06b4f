"""The decomposition of a correction's error: fitted floors, the white point's diagonal, the table."""

from __future__ import annotations

import numpy as np

from model.colour import linear_to_srgb, srgb_to_linear
from model.training.decomposition import (
    COLOUR_TITLES,
    COLUMNS,
    apply_polynomial,
    decompose_pair,
    decomposition_table,
    fitted_diagonal,
    fitted_matrix,
    fitted_polynomial,
    white_point_diagonal,
)
from model.training.metrics import delta_e2000


def _photo(seed=0, shape=(48, 64)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(10, 235, size=(*shape, 3), dtype=np.uint8)


def _mapped(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    lin = srgb_to_linear(img.reshape(-1, 3) / 255.0) @ m.T
    return np.clip(np.rint(linear_to_srgb(np.clip(lin, 0, 1)) * 255), 0, 255).astype(np.uint8).reshape(img.shape)


def test_floors_recover_their_own_family():
    inp = _photo()
    valid = np.ones(inp.shape[:2], bool)
    diag = np.diag([0.8, 1.0, 1.3])
    full = np.array([[0.8, 0.15, 0.0], [0.05, 0.9, 0.05], [0.0, -0.1, 1.2]])
    np.testing.assert_allclose(fitted_diagonal(inp, _mapped(inp, diag), valid), diag, atol=0.02)
    np.testing.assert_allclose(fitted_matrix(inp, _mapped(inp, full), valid), full, atol=0.02)
    # A diagonal cannot fit a full matrix's pairs; the 3x3 and the polynomial can.
    gt = _mapped(inp, full)
    from model.mapping import apply_matrix

    d = delta_e2000(apply_matrix(inp, fitted_diagonal(inp, gt, valid), protect_highlights=False), gt, valid)
    m = delta_e2000(apply_matrix(inp, fitted_matrix(inp, gt, valid), protect_highlights=False), gt, valid)
    p = delta_e2000(apply_polynomial(inp, fitted_polynomial(inp, gt, valid)), gt, valid)
    assert m < 0.5 < d and p < d


def test_white_point_diagonal_neutralises_the_same_white():
    m = np.array([[0.7, 0.2, 0.1], [0.0, 1.0, 0.05], [0.1, -0.1, 1.4]], dtype=np.float32)
    d = white_point_diagonal(m)
    white = np.linalg.solve(m.astype(np.float64), np.ones(3))
    out = d @ white
    np.testing.assert_allclose(out / out.mean(), np.ones(3), atol=1e-5)  # the same colour goes to neutral
    luma = np.array([0.2126, 0.7152, 0.0722])
    assert abs(luma @ d @ np.ones(3) - luma @ m @ np.ones(3)) < 1e-5  # with the same gain on neutrals
    assert np.count_nonzero(d - np.diag(np.diag(d))) == 0


class _Fixed:
    """A stand-in model with a known matrix (the decomposition only needs ``estimate``)."""

    def __init__(self, matrix):
        from model.corrector import Correction

        self.correction = Correction(np.asarray(matrix, np.float32), 1.0)

    def estimate(self, img):
        return self.correction


def test_decompose_pair_and_table():
    inp = _photo(1)
    valid = np.ones(inp.shape[:2], bool)
    truth = np.diag([1.2, 1.0, 0.8])
    gt = _mapped(inp, truth)
    row = decompose_pair(_Fixed(np.linalg.inv(np.diag([1 / 1.2, 1.0, 1 / 0.8])) * 1.0), inp, gt, valid)
    assert set(row) == {*COLUMNS, *COLOUR_TITLES.values(), "reach", "white_own", "white_true"}
    assert abs(row["colour_own_diagonal"] - 1.0) < 1e-6  # a diagonal is its own white point's diagonal
    assert abs(row["reach"] - 1.0) < 0.05  # the model's white point is the whole cast
    assert row["own"] < 1.0 and row["own_diagonal"] < 1.0 and row["none"] > 3.0  # the right matrix
    assert row["floor_diagonal"] < 1.0
    identity = decompose_pair(_Fixed(np.eye(3)), inp, gt, valid)
    assert abs(identity["own"] - identity["none"]) < 1e-6 and abs(identity["reach"]) < 1e-6
    half = decompose_pair(_Fixed(np.diag([1.2, 1.0, 0.8]) ** 0.5), inp, gt, valid)
    assert abs(half["reach"] - 0.5) < 0.05  # half the gains in log: half the cast
    assert np.isnan(decompose_pair(_Fixed(np.eye(3)), inp, inp, valid)["reach"])  # no cast: no ratio
    table = decomposition_table([{"name": "a", **row}, {"name": "b", **identity}], "t")
    assert "| **mean** |" in table and "Estimate gap" in table and table.count("\n| a |") == 1
    assert "| 100 % |" in table and "| 0 % |" in table and "| **50 %** (median) |" in table
    gray = decompose_pair(_Fixed(np.full((3, 3), 1 / 3) + 1e-3 * np.eye(3)), inp, gt, valid)  # near rank one
    assert gray["colour"] < 0.05 and gray["singular_ratio"] < 0.01 and gray["colour_own_diagonal"] < 0.05
    assert "Least-squares scale from the model's white points to the fitted ones (log-chroma): 1.0" in table
