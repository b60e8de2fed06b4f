"""ONNX / TorchScript export: onnxruntime and TorchScript give PyTorch's corrections on real photos."""

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from model.corrector import DEFAULT_CHECKPOINT, Corrector
from model.export import MATRIX_ATOL, main
from model.mapping import apply_matrix
from model.stats import analyse
from tests.conftest import REPO, load_rgb, wild_photos

pytestmark = pytest.mark.slow  # exports (ONNX, TorchScript) and runs them: about 15 s


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    assert (
        main(
            [
                "--checkpoint",
                str(DEFAULT_CHECKPOINT),
                "--onnx",
                str(out / "wbvae.onnx"),
                "--torchscript",
                str(out / "wbvae.ts"),
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def photos():
    return [load_rgb(p) for p in wild_photos()]


def test_onnx_matches_pytorch_on_real_photos(exported, photos):
    corrector = Corrector.from_checkpoint(DEFAULT_CHECKPOINT, "cpu")
    session = ort.InferenceSession(str(exported / "wbvae.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map  # the documented recipe: the cues' settings travel along
    assert meta["stats_size"] == str(corrector.model.config.stats_size)
    analyses = [analyse(img, int(meta["stats_size"]), meta["luma_weighted_chroma"] == "true") for img in photos]
    # the whole set as one batch: the batch axis is dynamic
    matrices, probs = session.run(
        None,
        {
            "thumb": np.stack([a.thumb for a in analyses]),
            "cues": np.stack([a.cues for a in analyses]),
            "log_gains": np.stack([a.log_gains for a in analyses]),
            "chroma": np.stack([a.chroma for a in analyses]),
        },
    )
    assert matrices.shape == (len(photos), 3, 3) and probs.shape == (len(photos),)
    for img, m, p in zip(photos, matrices, probs):
        ref = corrector.estimate(img)
        np.testing.assert_allclose(m, ref.matrix, atol=MATRIX_ATOL, rtol=0)
        assert abs(float(p) - ref.cast_probability) < MATRIX_ATOL
        diff = np.abs(apply_matrix(img, m).astype(int) - corrector.correct(img).astype(int))
        assert diff.max() <= 1


def test_torchscript_matches_pytorch(exported, photos):
    corrector = Corrector.from_checkpoint(DEFAULT_CHECKPOINT, "cpu")
    module = torch.jit.load(str(exported / "wbvae.ts"))
    a = corrector.analyse(photos[0])
    with torch.no_grad():
        matrix, _ = module(
            torch.from_numpy(a.thumb[None]),
            torch.from_numpy(a.cues[None]),
            torch.from_numpy(a.log_gains[None]),
            torch.from_numpy(a.chroma[None]),
        )
    np.testing.assert_allclose(matrix[0].numpy(), corrector.estimate(photos[0]).matrix, atol=MATRIX_ATOL, rtol=0)


def test_export_cli_errors_are_plain(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "model.export",
            "--checkpoint",
            str(tmp_path / "missing.pt"),
            "--onnx",
            str(tmp_path / "x.onnx"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "checkpoint not found" in r.stderr
    r = subprocess.run([sys.executable, "-m", "model.export"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "--onnx" in r.stderr
