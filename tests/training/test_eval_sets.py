"""Data sources: parsing, folder layouts, masks, splits, folds (on tiny temporary files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.training.eval_sets import (
    PairSpec,
    SourceSpec,
    list_pairs,
    load_image,
    load_pair,
    parse_source,
    read_fold_file,
    scene_disjoint_split,
    select_pairs,
)
from tests.conftest import real_pair_file


def save(path: Path, rgb, size=(6, 4)) -> Path:
    """Write a (h, w) = size image of one colour (or an array) to path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(rgb, np.uint8)
    if arr.ndim == 1:
        arr = np.broadcast_to(arr, (*size, 3)).copy()
    if path.suffix.lower() in (".jpg", ".jpeg"):
        Image.fromarray(arr).save(path, quality=95)
    else:
        Image.fromarray(arr).save(path)
    return path


# ---- parse_source --------------------------------------------------------


def test_parse_source_kinds():
    assert parse_source("set2=/data/Set2") == SourceSpec("set2", Path("/data/Set2"))
    assert parse_source("SET1=dir") == SourceSpec("set1", Path("dir"))
    assert parse_source("cube=a=b") == SourceSpec("cube", Path("a=b"))
    assert parse_source("pairs=x/pairs.tsv").path == Path("x/pairs.tsv")
    assert parse_source("synthetic") == SourceSpec("synthetic", None)
    assert str(parse_source("set2=d")) == "set2=d"


@pytest.mark.parametrize("bad", ["", "set3=dir", "set2", "set2=", "/some/dir", "synthetic=x"])
def test_parse_source_rejects(bad):
    with pytest.raises(ValueError, match="expected"):
        parse_source(bad)


def test_synthetic_has_no_files():
    with pytest.raises(ValueError, match="synthetic"):
        list_pairs("synthetic")


# ---- Set 2 ---------------------------------------------------------------


def test_set2_layout(tmp_path):
    for n in ("Mobile_00002.png", "DSLR_00001.png"):
        save(tmp_path / "input" / n, (200, 100, 50))
        save(tmp_path / "groundtruth" / n, (150, 150, 150))
    pairs = list_pairs(f"set2={tmp_path}")
    assert [p.name for p in pairs] == ["DSLR_00001.png", "Mobile_00002.png"]
    assert pairs[0].groundtruth_path == tmp_path / "groundtruth" / "DSLR_00001.png"
    assert pairs[0].exclude_rect is None and pairs[0].exclude_bottom_right is None
    inp, gt, mask = load_pair(pairs[0])
    assert inp.shape == gt.shape == (6, 4, 3) and inp.dtype == np.uint8 and mask.all()


def test_set2_missing_folders_and_files(tmp_path):
    with pytest.raises(ValueError, match=r"does not exist.*groundtruth/NAME.png"):
        list_pairs(f"set2={tmp_path / 'nope'}")
    save(tmp_path / "input" / "a.png", (1, 2, 3))
    with pytest.raises(ValueError, match=str(tmp_path / "groundtruth")):
        list_pairs(f"set2={tmp_path}")
    (tmp_path / "groundtruth").mkdir()
    with pytest.raises(ValueError, match="without ground truth.*a.png"):
        list_pairs(f"set2={tmp_path}")


# ---- Set 1 ---------------------------------------------------------------


def make_set1(root: Path, flat: bool) -> None:
    inp = root if flat else root / "input"
    gt = root if flat else root / "groundtruth"
    meta = root if flat else root / "metadata"
    save(inp / "Canon_0001_T_AS.png", (90, 120, 250), size=(8, 10))
    save(inp / "Canon_0001_F_CS.png", (120, 120, 200), size=(8, 10))
    save(gt / "Canon_0001_G_AS.png", (128, 128, 128), size=(8, 10))
    meta.mkdir(parents=True, exist_ok=True)
    # x, y, w, h (floats rounded like np.round: 1.4 -> 1, 2.6 -> 3, 3.2 -> 3, 2.5 -> 2)
    (meta / "Canon_0001_T_AS_mask.txt").write_text("1.4,2.6,3.2,2.5\n14.4,13.8,36.8,37.2\n")
    (meta / "Canon_0001_F_CS_mask.txt").write_text("0,0,2,2\n")


@pytest.mark.parametrize("flat", [False, True])
def test_set1_layouts_and_chart_mask(tmp_path, flat):
    make_set1(tmp_path, flat)
    pairs = list_pairs(f"set1={tmp_path}")
    assert [p.name for p in pairs] == ["Canon_0001_F_CS.png", "Canon_0001_T_AS.png"]
    assert all(p.groundtruth_path.name == "Canon_0001_G_AS.png" for p in pairs)
    t = pairs[1]
    assert t.exclude_rect == (1, 3, 3, 2)
    inp, gt, mask = load_pair(t)
    expected = np.ones((8, 10), bool)
    expected[3:5, 1:4] = False
    np.testing.assert_array_equal(mask, expected)
    assert (inp[~expected] == 0).all() and (gt[~expected] == 0).all()  # chart blacked out in both
    assert (inp[expected] == (90, 120, 250)).all()


def test_set1_missing_mask_or_groundtruth(tmp_path):
    make_set1(tmp_path, flat=False)
    (tmp_path / "metadata" / "Canon_0001_F_CS_mask.txt").unlink()
    with pytest.raises(ValueError, match=r"Canon_0001_F_CS_mask.txt not found"):
        list_pairs(f"set1={tmp_path}")
    (tmp_path / "metadata" / "Canon_0001_F_CS_mask.txt").write_text("garbage\n")
    with pytest.raises(ValueError, match="malformed chart mask"):
        list_pairs(f"set1={tmp_path}")
    (tmp_path / "metadata" / "Canon_0001_F_CS_mask.txt").write_text("0,0,2,2\n")
    (tmp_path / "groundtruth" / "Canon_0001_G_AS.png").unlink()
    with pytest.raises(ValueError, match="without ground truth"):
        list_pairs(f"set1={tmp_path}")
    with pytest.raises(ValueError, match="does not exist"):
        list_pairs(f"set1={tmp_path / 'missing'}")


# ---- Rendered Cube+ ------------------------------------------------------


@pytest.mark.parametrize("flat", [False, True])
def test_cube_layouts(tmp_path, flat):
    inp = tmp_path if flat else tmp_path / "input"
    gt = tmp_path if flat else tmp_path / "groundtruth"
    img = np.full((32, 32, 3), 140, np.uint8)
    img[16:, 16:] = 0  # the calibration object, blacked out in the renderings (JPEG-block aligned: exact zeros)
    save(inp / "19_F.JPG", img)
    save(inp / "19_T.JPG", img)
    save(gt / "19.JPG", img)
    pairs = list_pairs(f"cube={tmp_path}")
    assert [p.name for p in pairs] == ["19_F.JPG", "19_T.JPG"]
    assert pairs[0].groundtruth_path == gt / "19.JPG"
    assert pairs[0].exclude_bottom_right is None
    _, _, mask = load_pair(pairs[0])
    assert not mask[16:, 16:].any() and mask[:16].all()  # zero in both -> not scored


def test_cube_missing(tmp_path):
    save(tmp_path / "input" / "7_D.JPG", (1, 2, 3))
    (tmp_path / "groundtruth").mkdir()
    with pytest.raises(ValueError, match=r"7_D.JPG -> .*7.JPG"):
        list_pairs(f"cube={tmp_path}")
    with pytest.raises(ValueError, match="no Cube"):
        list_pairs(f"cube={tmp_path / 'groundtruth'}")


# ---- pairs.tsv -----------------------------------------------------------


def test_pairs_tsv(tmp_path):
    save(tmp_path / "imgs" / "a.png", (10, 20, 30))
    save(tmp_path / "imgs" / "gt.png", (30, 20, 10))
    tsv = tmp_path / "list" / "pairs.tsv"
    tsv.parent.mkdir()
    tsv.write_text("# comment\n../imgs/a.png\t../imgs/gt.png\n\n")
    pairs = list_pairs(f"pairs={tsv}")
    assert pairs == [PairSpec("a.png", tsv.parent / "../imgs/a.png", tsv.parent / "../imgs/gt.png", None, None)]
    tsv.write_text("../imgs/a.png ../imgs/gt.png\n")
    with pytest.raises(ValueError, match=r"pairs.tsv:1: malformed"):
        list_pairs(f"pairs={tsv}")
    tsv.write_text("../imgs/a.png\t../imgs/missing.png\n")
    with pytest.raises(ValueError, match="missing.png not found"):
        list_pairs(f"pairs={tsv}")
    with pytest.raises(ValueError, match="does not exist"):
        list_pairs(f"pairs={tmp_path / 'none.tsv'}")


def test_real_pairs_tsv():
    tsv = real_pair_file("pairs.tsv")
    pairs = list_pairs(f"pairs={tsv}")
    assert len(pairs) == 10 and {p.groundtruth_path.name for p in pairs} == {"8D5U5524_G_AS.png"}


# ---- load_pair -----------------------------------------------------------


def test_load_pair_mask_exif_and_size_check(tmp_path):
    a = np.full((4, 6, 3), 100, np.uint8)
    a[0, 0] = 0
    b = np.full((4, 6, 3), 120, np.uint8)
    b[0, 0] = 0
    b[1, 1] = 0  # zero in one image only: still scored
    pa, pb = save(tmp_path / "a.png", a), save(tmp_path / "b.png", b)
    inp, gt, mask = load_pair(PairSpec("a.png", pa, pb, None, (2, 1)))
    assert not mask[0, 0] and mask[1, 1]
    assert not mask[3, 4:].any() and mask[3, :4].all() and mask[2].all()  # bottom-right 2 wide, 1 high
    # EXIF orientation 6 (rotate 90 degrees) is applied on load
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").shape == (6, 4, 3)
    save(tmp_path / "small.png", (1, 1, 1), size=(3, 3))
    with pytest.raises(ValueError, match="same size"):
        load_pair(PairSpec("a.png", pa, tmp_path / "small.png", None, None))


# ---- split and folds -----------------------------------------------------


def test_scene_disjoint_split(tmp_path):
    rng = np.random.default_rng(1)
    pairs = []
    for s in range(12):
        content = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        gt_a = save(tmp_path / f"gt{s}.png", content)
        gt_b = save(tmp_path / f"gt{s}_copy.png", content)  # same pixels, another file
        pairs += [
            PairSpec(f"s{s}_{k}.png", save(tmp_path / f"s{s}_{k}.png", (k, s, 9)), gt_a if k < 2 else gt_b)
            for k in range(3)
        ]
    train, val = scene_disjoint_split(pairs, 0.25, seed=3)
    assert len(train) + len(val) == len(pairs) and len(val) in (9, 12)
    scene = lambda p: p.name.split("_")[0]  # noqa: E731
    assert not {scene(p) for p in train} & {scene(p) for p in val}
    assert scene_disjoint_split(pairs, 0.25, seed=3) == (train, val)  # deterministic
    assert [p for p in pairs if p in val] == val  # input order kept
    assert scene_disjoint_split(pairs, 0.0, seed=3) == (pairs, [])
    # by path only: pairs sharing a ground-truth file still stay together
    train_p, val_p = scene_disjoint_split(pairs, 0.25, seed=3, by_content=False)
    assert len(train_p) + len(val_p) == len(pairs)
    assert not {p.groundtruth_path for p in train_p} & {p.groundtruth_path for p in val_p}
    with pytest.raises(ValueError):
        scene_disjoint_split(pairs, 1.0)


def test_read_fold_file_and_select(tmp_path):
    f = tmp_path / "folds.txt"
    f.write_text("# Set 1 folds\n[fold 1]\nCanon_0001\n\n[fold 2]\nNikon_0002_T_AS.png\n[Fold 3]\nNikon_0003_D_CS\n")
    folds = read_fold_file(f)
    assert folds == [["Canon_0001"], ["Nikon_0002_T_AS.png"], ["Nikon_0003_D_CS"]]
    pairs = [
        PairSpec(n, Path(n), Path("gt.png"))
        for n in (
            "Canon_0001_T_AS.png",
            "Canon_0001_F_CS.png",
            "Nikon_0002_T_AS.png",
            "Nikon_0002_S_AS.png",
            "Nikon_0003_D_CS.png",
        )
    ]
    assert [p.name for p in select_pairs(pairs, folds[0])] == ["Canon_0001_T_AS.png", "Canon_0001_F_CS.png"]
    assert [p.name for p in select_pairs(pairs, folds[1])] == ["Nikon_0002_T_AS.png"]
    assert [p.name for p in select_pairs(pairs, folds[2])] == ["Nikon_0003_D_CS.png"]
    f.write_text("Canon_0001\n")
    with pytest.raises(ValueError, match="before any"):
        read_fold_file(f)
    with pytest.raises(ValueError, match="not found"):
        read_fold_file(tmp_path / "nope.txt")
