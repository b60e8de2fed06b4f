"""Evaluation core and CLI: baselines on the real pairs, Deep WB side by side, do no harm."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.training.baselines import BASELINES
from model.training.eval_sets import PairSpec, list_pairs
from model.training.evaluate import DEEPWB_METHOD, evaluate, evaluate_frames, main, summarise_records
from tests.conftest import real_pair_file


def real_tsv() -> Path:
    """../shared/data/real-pairs/pairs.tsv (skips, or fails under WBVAE_REQUIRE_DATA=1, without it)."""
    return real_pair_file("pairs.tsv")


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_evaluate_frames_records():
    rng = np.random.default_rng(0)
    gt = rng.integers(1, 256, (8, 9, 3), dtype=np.uint8)
    inp = (gt * 0.8).astype(np.uint8)
    mask = np.ones((8, 9), bool)
    recs = evaluate_frames([("x.png", inp, gt, mask)], {"perfect": lambda im: gt.copy(), "none": BASELINES["none"]})
    assert [r["method"] for r in recs] == ["perfect", "none"]
    assert recs[0]["mse"] == recs[0]["mae"] == recs[0]["de2000"] == recs[0]["de76"] == 0.0
    assert recs[1]["de2000"] > 0 and recs[1]["name"] == "x.png"
    with pytest.raises(ValueError, match="expected uint8"):
        evaluate_frames([("x.png", inp, gt, mask)], {"bad": lambda im: im.astype(np.float32)})


def test_identity_mode_scores_ground_truth_once(tmp_path):
    gt = np.full((5, 5, 3), 120, np.uint8)
    gt[0, 0] = (200, 10, 10)
    Image.fromarray(gt).save(tmp_path / "gt.png")
    Image.fromarray(gt[..., ::-1].copy()).save(tmp_path / "in.png")
    pairs = [PairSpec(f"in{k}.png", tmp_path / "in.png", tmp_path / "gt.png") for k in range(3)]
    recs = evaluate(pairs, {"none": BASELINES["none"]}, identity=True)
    assert len(recs) == 1 and recs[0]["name"] == "gt.png" and recs[0]["de2000"] == 0.0
    recs = evaluate(pairs, {"none": BASELINES["none"]})
    assert len(recs) == 3 and recs[0]["de2000"] > 0


@pytest.mark.slow
def test_cli_real_pairs_baselines(tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(
        [
            f"pairs={real_tsv()}",
            "--no-model",
            "--baselines",
            "none,shades of gray",
            "--out",
            str(out),
            "--quiet",
            "--deepwb",
            str(tmp_path / "absent.json"),
        ]
    )
    assert rc == 0
    assert (out / "per_image.csv").is_file() and (out / "summary.md").is_file()
    assert not (out / "deepwb_side_by_side.csv").exists()
    rows = read_csv(out / "per_image.csv")
    assert list(rows[0])[:6] == ["method", "name", "mse", "mae", "de2000", "de76"]
    assert len(rows) == 20
    s = summarise_records([{**r, **{k: float(r[k]) for k in ("mse", "mae", "de2000", "de76")}} for r in rows])
    assert s["none"]["de2000"]["mean"] == pytest.approx(11.83, abs=0.05)
    assert s["shades of gray"]["de2000"]["mean"] == pytest.approx(5.26, abs=0.3)
    printed = capsys.readouterr().out
    assert "| shades of gray | 10 |" in printed and "Delta E 2000" in printed
    assert (out / "summary.md").read_text() in printed


def test_cli_deepwb_side_by_side(tmp_path):
    names = ["Mobile_00202.png", "DSLR_00001.png", "Other_1.png"]
    rng = np.random.default_rng(2)
    for n in names:
        (tmp_path / "set2" / "input").mkdir(parents=True, exist_ok=True)
        (tmp_path / "set2" / "groundtruth").mkdir(exist_ok=True)
        gt = rng.integers(20, 230, (6, 7, 3), dtype=np.uint8)
        Image.fromarray(gt).save(tmp_path / "set2" / "groundtruth" / n)
        cast = (gt * np.array([1.1, 1.0, 0.7])).clip(0, 255).astype(np.uint8)
        Image.fromarray(cast).save(tmp_path / "set2" / "input" / n)
    published = {
        "names": ["DSLR_00001.png", "Mobile_00202.png", "Mobile_00203.png"],
        "MSE": [100.0, 50.0, 1.0],
        "MAE": [3.0, 2.0, 1.0],
        "DeltaE2000": [5.0, 4.0, 1.0],
        "DeltaE76": [6.0, 5.0, 1.0],
    }
    (tmp_path / "deepwb.json").write_text(json.dumps(published))
    out = tmp_path / "eval"
    main(
        [
            f"set2={tmp_path / 'set2'}",
            "--no-model",
            "--out",
            str(out),
            "--quiet",
            "--deepwb",
            str(tmp_path / "deepwb.json"),
        ]
    )
    side = read_csv(out / "deepwb_side_by_side.csv")
    assert sorted(r["name"] for r in side) == ["DSLR_00001.png", "Mobile_00202.png"]
    by_name = {r["name"]: r for r in side}
    assert float(by_name["DSLR_00001.png"][f"{DEEPWB_METHOD}:de2000"]) == 5.0
    assert "shades of gray:de2000" in side[0]
    summary = (out / "summary.md").read_text()
    assert "over the same 2 images" in summary
    assert f"| {DEEPWB_METHOD} | 2 | 4.50 |" in summary


def test_cli_errors(tmp_path):
    with pytest.raises(SystemExit) as e:
        main([f"set2={tmp_path / 'missing'}", "--no-model"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        main([f"pairs={real_tsv()}", "--no-model", "--baselines", "magic"])
    with pytest.raises(SystemExit):
        main([f"pairs={real_tsv()}", "--no-model", "--no-baselines"])


@pytest.mark.slow
def test_model_through_corrector(tmp_path):
    corrector = pytest.importorskip("model.corrector", reason="model.corrector not importable yet")
    ckpt = Path(corrector.DEFAULT_CHECKPOINT)
    if not ckpt.is_file():  # no trained checkpoint yet: test the plumbing with an untrained model
        from model.vae import WBVAE, WBVAEConfig

        ckpt = tmp_path / "untrained.pt"
        corrector.save_checkpoint(ckpt, WBVAE(WBVAEConfig()))
    out = tmp_path / "eval"
    main(
        [
            f"pairs={real_tsv()}",
            "--checkpoint",
            str(ckpt),
            "--device",
            "cpu",
            "--limit",
            "2",
            "--baselines",
            "none",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    rows = read_csv(out / "per_image.csv")
    assert [r["method"] for r in rows] == ["wbvae", "none", "wbvae", "none"]
    assert all(np.isfinite(float(r["de2000"])) for r in rows)


def test_limit_and_listing():
    assert len(list_pairs(f"pairs={real_tsv()}")) == 10
