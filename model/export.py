"""Export the correction estimator to ONNX (and TorchScript): ``python -m model.export --onnx FILE``.

The exported graph is the deterministic part of ``Corrector.estimate``: the
encoder's mean ``mu`` and the correction head,

    (thumb (B, 3, 64, 64) float32 sRGB in [0, 1],
     cues (B, CUE_DIM) float32,
     log_gains (B, NUM_ESTIMATES, 3) float32,
     chroma (B, 2, CHROMA_BINS, CHROMA_BINS) float32)
        -> (matrix (B, 3, 3) float32 linear-RGB, cast_probability (B,) float32)

Two steps stay outside the graph, as they are cheap, exact NumPy and would
bloat it: computing the cues from the photo (``model.stats.analyse``, which
also produces ``thumb``, ``log_gains`` and ``chroma``), and applying the matrix to every
pixel at full resolution (``model.mapping.apply_matrix``: sRGB -> linear by a
256-entry table, matrix, linear -> sRGB). The recipe with onnxruntime::

    import numpy as np, onnxruntime as ort
    from model.stats import analyse
    from model.mapping import apply_matrix

    session = ort.InferenceSession("wbvae.onnx")
    meta = session.get_modelmeta().custom_metadata_map  # how the checkpoint computes its cues
    a = analyse(rgb, int(meta["stats_size"]), meta["luma_weighted_chroma"] == "true")  # rgb: (H, W, 3) uint8
    matrix, p = session.run(None, {"thumb": a.thumb[None], "cues": a.cues[None],
                                   "log_gains": a.log_gains[None], "chroma": a.chroma[None]})
    corrected = apply_matrix(rgb, matrix[0])           # same shape, uint8

In another language: ``matrix`` acts on column vectors of linear RGB
(``rgb_lin_out = matrix @ rgb_lin_in``), clipped to [0, 1] before re-encoding.
Tested: the ONNX matrix matches PyTorch within ``MATRIX_ATOL`` on real photos,
and the corrected images differ by at most one level.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from model.corrector import DEFAULT_CHECKPOINT, load_model
from model.stats import CHROMA_BINS, CUE_DIM, NUM_ESTIMATES, THUMB_SIZE
from model.vae import WBVAE

INPUT_NAMES = ["thumb", "cues", "log_gains", "chroma"]
OUTPUT_NAMES = ["matrix", "cast_probability"]
MATRIX_ATOL = 1e-5  # onnxruntime vs PyTorch, per matrix entry (tested)
OPSET = 18


class CorrectionGraph(nn.Module):
    """``(thumb, cues, log_gains, chroma) -> (matrix, cast_probability)`` with the latent mean: no sampling."""

    def __init__(self, model: WBVAE):
        super().__init__()
        self.model = model.eval()

    def forward(
        self, thumb: torch.Tensor, cues: torch.Tensor, log_gains: torch.Tensor, chroma: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mu, _ = self.model.encode(thumb)  # (B, latent)
        matrix, cast_logit, _ = self.model.correction(mu, cues, log_gains, chroma)  # (B, 3, 3), (B,)
        return matrix, torch.sigmoid(cast_logit)


def example_inputs(batch: int = 1) -> tuple[torch.Tensor, ...]:
    """Inputs of the right shapes and ranges, for tracing."""
    g = torch.Generator().manual_seed(0)
    return (
        torch.rand(batch, 3, THUMB_SIZE, THUMB_SIZE, generator=g),
        torch.rand(batch, CUE_DIM, generator=g),
        0.1 * torch.randn(batch, NUM_ESTIMATES, 3, generator=g),
        torch.rand(batch, 2, CHROMA_BINS, CHROMA_BINS, generator=g) / CHROMA_BINS**2,
    )


def export_onnx(model: WBVAE, path: str | Path, opset: int = OPSET) -> Path:
    """Write the correction graph as ONNX with a dynamic batch axis; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = CorrectionGraph(model.cpu().float()).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # exporter notes on axis naming, not problems
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            graph,
            example_inputs(2),
            str(path),
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            opset_version=opset,
            dynamo=True,
            external_data=False,
            dynamic_shapes={n: {0: batch} for n in INPUT_NAMES},
            verbose=False,
        )
    import onnx

    graph_file = onnx.load(str(path))
    for key, value in analysis_settings(model).items():
        graph_file.metadata_props.add(key=key, value=value)
    onnx.save(graph_file, str(path))
    return path


def analysis_settings(model: WBVAE) -> dict[str, str]:
    """How the model's inputs are computed from a photo (``model.stats.analyse``'s arguments), as strings."""
    return {
        "stats_size": str(model.config.stats_size),
        "luma_weighted_chroma": str(model.config.luma_weighted_chroma).lower(),
    }


def export_torchscript(model: WBVAE, path: str | Path) -> Path:
    """Write the same graph as a traced TorchScript module (``torch.jit.load``; deprecated upstream, kept for
    C++/LibTorch users)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():  # TorchScript is deprecated upstream but still loads
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(CorrectionGraph(model.cpu().float()).eval(), example_inputs(2))
    traced.save(str(path))
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m model.export",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The cues (model.stats.analyse) and the full-resolution apply "
        "(model.mapping.apply_matrix) stay outside the graph; see the README.",
    )
    p.add_argument(
        "--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="checkpoint to export (default: %(default)s)"
    )
    p.add_argument("--onnx", type=Path, metavar="FILE", help="write an ONNX model here")
    p.add_argument(
        "--torchscript",
        type=Path,
        metavar="FILE",
        help="write a TorchScript module here (deprecated by PyTorch; for LibTorch)",
    )
    p.add_argument("--opset", type=int, default=OPSET, help="ONNX opset (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.onnx and not args.torchscript:
        parser.error("nothing to do: give --onnx FILE and/or --torchscript FILE")
    try:
        model, _ = load_model(args.checkpoint, "cpu")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" chatter
    if args.onnx:
        print(f"wrote {export_onnx(model, args.onnx, args.opset)}")
    if args.torchscript:
        print(f"wrote {export_torchscript(model, args.torchscript)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
