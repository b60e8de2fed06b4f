import math

import pytest
import torch

from model.corrector import load_model, save_checkpoint
from model.stats import CHROMA_BINS, CUE_DIM, NUM_ESTIMATES
from model.vae import WBVAE, WBVAEConfig, vae_loss


def _inputs(batch=4, size=64):
    g = torch.Generator().manual_seed(0)
    chroma = torch.rand(batch, 2, CHROMA_BINS, CHROMA_BINS, generator=g)
    return (
        torch.rand(batch, 3, size, size, generator=g),
        torch.randn(batch, CUE_DIM, generator=g),
        0.3 * torch.randn(batch, NUM_ESTIMATES, 3, generator=g),
        chroma / chroma.sum((2, 3), keepdim=True),
    )


def test_output_shapes():
    model = WBVAE()
    out = model(*_inputs())
    assert out["recon"].shape == (4, 3, 64, 64)
    assert out["mu"].shape == out["logvar"].shape == (4, 128)
    assert out["matrix"].shape == (4, 3, 3)
    assert out["cast_logit"].shape == (4,) and out["white"].shape == (4, 2)
    assert 0 < out["recon"].min() and out["recon"].max() < 1  # sigmoid output


def test_untrained_head_is_identity():
    out = WBVAE()(*_inputs())
    assert torch.allclose(out["matrix"], torch.eye(3).expand(4, 3, 3), atol=1e-6)


def test_reparameterize_statistics():
    torch.manual_seed(0)
    mu = torch.full((200_000, 2), 1.5)
    logvar = torch.log(torch.tensor([0.25, 4.0])).expand(200_000, 2)
    z = WBVAE.reparameterize(mu, logvar)
    assert torch.allclose(z.mean(0), torch.tensor([1.5, 1.5]), atol=0.02)
    assert torch.allclose(z.std(0), torch.tensor([0.5, 2.0]), atol=0.02)


def test_loss_is_recon_plus_beta_kl_by_hand():
    recon = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    target = torch.tensor([[1.0, 1.0], [0.5, 0.0]])
    mu = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    total, rec, kl = vae_loss(recon, target, mu, logvar, beta=0.00025)
    expected_rec = (1.0 + 0.0 + 0.0 + 0.25) / 4
    # KL per sample: 0.5 * sum(mu^2 + sigma^2 - 1 - log sigma^2)
    kl0 = 0.5 * ((1 + 1 - 1 - 0) + (0 + 2 - 1 - math.log(2.0)))
    kl1 = 0.5 * ((0 + 1 - 1 - 0) + (4 + 1 - 1 - 0))
    assert rec.item() == pytest.approx(expected_rec)
    assert kl.item() == pytest.approx((kl0 + kl1) / 2)
    assert total.item() == pytest.approx(expected_rec + 0.00025 * (kl0 + kl1) / 2)


def test_checkpoint_round_trip(tmp_path):
    cfg = WBVAEConfig(channels=(8, 16, 16, 32), latent_dim=16, head_hidden=32)
    model = WBVAE(cfg)
    torch.nn.init.normal_(model.head[-1].weight, std=0.1)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, step=7)
    loaded, meta = load_model(path)
    assert loaded.config == cfg and meta["step"] == 7
    model.eval()
    x = _inputs(2)
    with torch.no_grad():
        a, b = model(*x, sample=False), loaded(*x, sample=False)
    assert torch.equal(a["matrix"], b["matrix"]) and torch.equal(a["recon"], b["recon"])


def test_bad_checkpoints_name_the_path(tmp_path):
    with pytest.raises(ValueError, match="not found.*missing.pt"):
        load_model(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.pt.*unreadable"):
        load_model(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"model_args": WBVAEConfig().to_dict(), "state_dict": {"w": torch.zeros(1)}}, other)
    with pytest.raises(ValueError, match="other.pt.*does not match"):
        load_model(other)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(ValueError, match="foreign.pt.*not a wbvae checkpoint"):
        load_model(foreign)


def test_cast_scale_multiplies_the_estimated_cast_and_1_is_the_old_head():
    """``cast_scale`` scales the log gains before their bound: the white point's log-chroma distance grows by the
    scale (tanh is near linear there); a checkpoint saved before the field existed loads with 1 (the old head)."""
    import numpy as np

    from model.corrector import DEFAULT_CHECKPOINT, Corrector

    model, _ = load_model(DEFAULT_CHECKPOINT)
    args = {k: v for k, v in model.config.to_dict().items() if k != "cast_scale"}
    assert WBVAEConfig.from_dict(args).cast_scale == 1.0
    rng = np.random.default_rng(0)
    scene = rng.uniform(0.2, 0.9, (12, 16, 3)) * np.array([1.0, 0.85, 0.7])  # a warm cast on flat patches
    photo = (np.kron(scene, np.ones((20, 20, 1))) * 255).astype(np.uint8)
    model.config.dead_zone = 0.0
    distance = {}
    for scale in (1.0, 1.2):
        model.config.cast_scale = scale
        distance[scale] = Corrector(model, torch.device("cpu")).estimate(photo).white_distance
    assert distance[1.0] > 0.1
    assert distance[1.2] == pytest.approx(1.2 * distance[1.0], rel=0.03)


def test_bounded_look_keeps_white_and_colour():
    """The look of a ``max_look`` model keeps white and can neither drain colour nor turn hue past its bound."""
    from model.vae import bounded_look

    torch.manual_seed(0)
    bound = 0.3
    free = torch.randn(256, 3, 3) * torch.tensor([0.1, 1.0, 10.0]).repeat(86)[:256, None, None]
    looks = bounded_look(free, bound)
    torch.testing.assert_close(looks @ torch.ones(3), torch.ones(256, 3), atol=1e-5, rtol=0)
    sv = torch.linalg.svdvals(looks)
    assert sv.max() <= math.exp(bound) + 1e-5 and sv.min() >= math.exp(-bound) - 1e-5
    torch.testing.assert_close(bounded_look(torch.zeros(2, 3, 3), bound), torch.eye(3).expand(2, 3, 3))
    torch.testing.assert_close(looks, torch.linalg.matrix_exp(_log_of(free, bound)))  # the series is exp
    gray = torch.full((1, 3, 3), 10.0) - 20 * torch.eye(3)  # what drained photos before: rows alike
    assert torch.linalg.svdvals(bounded_look(gray, bound)).min() >= math.exp(-bound) - 1e-5


def test_a_bounded_look_model_is_its_white_points_diagonal_times_a_bounded_look():
    cfg = WBVAEConfig(full_matrix=True, max_look=0.3, use_global_mix=True)
    model = WBVAE(cfg).eval()
    torch.manual_seed(1)
    for p in model.head[-1].parameters():
        torch.nn.init.normal_(p, std=0.5)
    with torch.no_grad():
        matrix = model(*_inputs(4), sample=False)["matrix"].double()
    white = torch.linalg.solve(matrix, torch.ones(4, 3, dtype=torch.float64))  # the colour M maps to gray
    assert (white > 0).all()
    look = matrix @ torch.diag_embed(white)  # M = look @ diag(1 / white): what is left besides the white point
    sv = torch.linalg.svdvals(look)
    assert (sv.max(1).values <= math.exp(0.3) + 1e-4).all() and (sv.min(1).values >= math.exp(-0.3) - 1e-4).all()


def _log_of(free, bound):
    """The generator ``bounded_look`` exponentiates (row means removed, norm bounded), for the reference."""
    a = free - free.mean(dim=2, keepdim=True)
    norm = torch.linalg.matrix_norm(a)[:, None, None]
    return a * (bound * torch.tanh(norm / bound) / norm)
