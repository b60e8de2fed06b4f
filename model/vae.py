"""The seed's VAE plus a constrained colour-correction head.

Working resolution: the VAE sees a 64x64 thumbnail. White balance is a global
property of a photo; 64 px keep every large surface and its colour while the
four stride-2 convolutions stay cheap on a CPU (about 20 MFLOP a photo). Detail
is never produced by the decoder: the correction the head predicts is a 3x3
matrix in linear RGB that is applied to the full-resolution original
(``model.mapping``), so the output keeps every pixel of the input.

The head sees the latent mean plus content-independent cues computed on a
larger copy (``model.stats``) and predicts

    M = exp(p * x) * (I + p * delta) @ diag(exp(p * (sum_k (A_k + a_k) l_k + b + r)))

where ``l_k`` are the log-gains of K statistical illuminant estimates (gray
world, shades of gray, ...) plus the estimate of ``ChromaNet``, a small
convolutional network on log-chroma histograms that is trained on its own
loss. ``A_k`` (3x3) and ``b`` are global parameters: a learned linear
combination of the estimates ("corrected moments", Finlayson, ICCV 2013),
the content-independent base; ``a_k`` are per-image weights from the head
on top of it, ``r`` a
residual, ``delta`` a bounded 3x3 residual (nine free terms: with ``full_matrix`` the head owns
it outright; otherwise it is scaled by ``p``; with ``max_look`` > 0 it becomes ``bounded_look``, a
look that keeps white and whose singular values stay within ``e^(+-max_look)``, so ``M`` is the white
point's diagonal times a look that cannot turn a photo gray) and ``p`` the predicted probability
that the photo has a cast at all. With ``anchor_white`` the gains of ChromaNet's
white point are added to that sum as they are (the white point anchored): the
head then learns corrections to a direct illuminant estimate instead of finding it.
With ``dead_zone`` = t > 0, ``M`` becomes ``I + d^2 / (d^2 + t^2) (M - I)``, ``d`` the distance
of the neutralised white from neutral in log-chroma: a correction smaller than the estimator's
typical error on balanced photos fades out (do no harm), a large one is kept. ``cast_scale`` multiplies
the log gains (the estimated cast) before their bound: a squared loss teaches the head to stop short
of large casts it is unsure of, and a scale chosen after training on held-out cameras' renders
(``scripts/calibrate.py``) undoes the part of that shortfall that costs more than it saves.
Every output layer of the head starts at
zero, so an untrained head is the identity; ``M`` is scaled so that the
estimated illuminant keeps its luminance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from model.stats import CHROMA_BINS, CUE_DIM, NUM_ESTIMATES, chroma_bin_centres

LUMA = torch.tensor([0.2126, 0.7152, 0.0722])
LOOK_EXP_TERMS = 12  # Taylor terms of the look's exponential (``small_matrix_exp``)


@dataclass
class WBVAEConfig:
    """Architecture; saved as ``model_args`` beside the weights."""

    image_size: int = 64
    stats_size: int = 256  # long side of the copy the statistical cues are computed on
    luma_weighted_chroma: bool = False  # ChromaNet's histograms count pixels by luminance
    channels: tuple[int, ...] = (32, 64, 128, 256)
    latent_dim: int = 128
    cue_dim: int = CUE_DIM
    num_estimates: int = NUM_ESTIMATES
    head_hidden: int = 256
    use_cues: bool = True
    max_log_gain: float = 1.5
    max_delta: float = 0.5
    max_log_exposure: float = 0.5
    use_chroma_net: bool = True
    chroma_width: int = 16
    head_dropout: float = 0.5
    use_global_mix: bool = False  # off in checkpoints from before it existed; training turns it on
    gate_base: bool = True  # the cast probability also scales the global combination
    anchor_white: bool = False  # gains start from ChromaNet's white point; the head corrects it
    dead_zone: float = 0.0  # corrections whose white point lies this close to neutral (log-chroma) fade out
    cast_scale: float = 1.0  # the estimated log gains are scaled by this (set after training, like dead_zone)
    full_matrix: bool = (
        False  # the 3x3 residual is a free mapping (bound max_delta), not scaled by the cast probability
    )
    max_look: float = 0.0  # > 0: the residual is a bounded look, exp(A) with A 1 = 0 and |A|_F <= max_look
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> WBVAEConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown model_args {unknown}")
        if "channels" in known:
            known["channels"] = tuple(known["channels"])
        return cls(**known)


def vae_loss(
    recon: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float = 0.00025
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seed loss: reconstruction + beta * KL (Kingma & Welling 2014, Appendix B).

    recon: mean squared error over all elements; KL: closed-form divergence of
    N(mu, exp(logvar)) from N(0, I), summed over latent dims, averaged over the
    batch. Returns (total, recon, kl).
    """
    rec = F.mse_loss(recon, target)
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
    return rec + beta * kl, rec, kl


def bounded_look(delta: torch.Tensor, bound: float) -> torch.Tensor:
    """(B, 3, 3) free terms -> looks ``exp(A)`` that keep white and cannot drain colour.

    ``A`` is ``delta`` with each row's mean removed (``A 1 = 0``, so ``exp(A) 1 = 1``: white stays
    white, the white point is the diagonal's alone), its Frobenius norm softly bounded by ``bound``
    (``bound tanh(|A| / bound)``). Every singular value of ``exp(A)`` then lies in ``[e^-bound, e^bound]``:
    no look can shrink a colour's distance from gray below ``e^-bound`` of itself or turn its hue by more
    than ``bound`` radians, so the whole mapping never nears rank one.
    """
    a = delta - delta.mean(dim=2, keepdim=True)
    norm = torch.linalg.matrix_norm(a).clamp(min=1e-8)[:, None, None]  # Frobenius
    a = a * (bound * torch.tanh(norm / bound) / norm)
    return small_matrix_exp(a)


def small_matrix_exp(a: torch.Tensor, terms: int = LOOK_EXP_TERMS) -> torch.Tensor:
    """``exp(a)`` of (B, 3, 3) matrices of norm at most about 1 by its Taylor series (plain matmuls, so the
    graph exports to ONNX, which has no matrix exponential): the first omitted term is below
    ``|a|^(terms+1) / (terms+1)!``, under float32's resolution for ``|a| <= 1``."""
    term = torch.eye(3, dtype=a.dtype, device=a.device).expand_as(a)
    result = term
    for k in range(1, terms + 1):
        term = term @ a / k
        result = result + term
    return result


class ChromaNet(nn.Module):
    """Illuminant from log-chroma histograms (after FFCC, Barron & Tsai, CVPR 2017).

    A colour cast translates the histograms of log(G/R), log(G/B); convolutions
    are translation-equivariant, so the learned "where is white" map moves with
    the cast whatever the content. A learned bias map adds a prior over
    illuminants. Softargmax gives the white point's log-chroma (u, v).
    """

    def __init__(self, width: int = 16, bins: int = CHROMA_BINS):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2, width, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 5, padding=4, dilation=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 5, padding=4, dilation=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 1, 5, padding=2),
        )
        self.prior = nn.Parameter(torch.zeros(bins, bins))
        self.register_buffer("centres", torch.from_numpy(chroma_bin_centres()), persistent=False)

    def forward(self, hist: torch.Tensor) -> torch.Tensor:
        """hist: (B, 2, bins, bins) -> (B, 2) white point (u, v) = (log G/R, log G/B)."""
        centres: torch.Tensor = self.centres  # type: ignore[assignment]  # a buffer
        logits = self.net(hist)[:, 0] + self.prior  # (B, bins, bins)
        prob = torch.softmax(logits.flatten(1), dim=1).view_as(logits)
        u = (prob.sum(2) * centres).sum(1)
        v = (prob.sum(1) * centres).sum(1)
        return torch.stack([u, v], dim=1)


class WBVAE(nn.Module):
    """Seed VAE (encoder -> mu/logvar -> z -> decoder) with a correction head."""

    def __init__(self, config: WBVAEConfig | None = None):
        super().__init__()
        self.config = cfg = config or WBVAEConfig()
        n = len(cfg.channels)
        if cfg.image_size % (2**n):
            raise ValueError(f"image_size {cfg.image_size} must be divisible by 2**{n}")
        self.feature_size = cfg.image_size // 2**n
        flat = cfg.channels[-1] * self.feature_size**2

        enc, c_in = [], 3
        for c in cfg.channels:  # each halves H and W
            enc += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
            c_in = c
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        self.fc_mu = nn.Linear(flat, cfg.latent_dim)
        self.fc_logvar = nn.Linear(flat, cfg.latent_dim)

        self.decoder_input = nn.Linear(cfg.latent_dim, flat)
        dec, rev = [], list(reversed(cfg.channels))
        for c_from, c_to in zip(rev, rev[1:]):  # each doubles H and W
            dec += [nn.ConvTranspose2d(c_from, c_to, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
        dec += [nn.ConvTranspose2d(rev[-1], 3, 4, stride=2, padding=1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*dec)

        self.chroma_net = ChromaNet(cfg.chroma_width) if cfg.use_chroma_net else None
        self.num_candidates = cfg.num_estimates + (1 if cfg.use_chroma_net else 0)
        head_in = cfg.latent_dim + (cfg.cue_dim if cfg.use_cues else 0) + (2 if cfg.use_chroma_net else 0)
        self.head_out_dim = 1 + self.num_candidates + 3 + 1 + 9
        if cfg.use_global_mix:  # zero: the identity until trained
            self.mix = nn.Parameter(torch.zeros(self.num_candidates, 3, 3))
            self.mix_bias = nn.Parameter(torch.zeros(3))
        self.head_dropout = nn.Dropout(cfg.head_dropout)  # the head must not lean on a few memorised features
        self.head = nn.Sequential(
            nn.Linear(head_in, cfg.head_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.head_hidden, cfg.head_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.head_hidden, self.head_out_dim),
        )
        out_layer: nn.Linear = self.head[-1]  # type: ignore[assignment]
        nn.init.zeros_(out_layer.weight)
        nn.init.zeros_(out_layer.bias)

    # --- the textbook VAE ---
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)  # (B, 3, S, S) -> (B, C * S/16 * S/16)
        return self.fc_mu(h), self.fc_logvar(h)  # (B, latent), (B, latent)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z = mu + eps * sigma, eps ~ N(0, I)."""
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        c, s = self.config.channels[-1], self.feature_size
        h = self.decoder_input(z).view(-1, c, s, s)  # (B, latent) -> (B, C, S/16, S/16)
        return self.decoder(h)  # (B, 3, S, S), in (0, 1)

    # --- the correction head ---
    def correction(
        self, latent: torch.Tensor, cues: torch.Tensor, log_gains: torch.Tensor, chroma: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Linear-RGB 3x3 correction matrices (B, 3, 3), cast logits (B,) and ChromaNet's white point (B, 2).

        latent: (B, latent); cues: (B, cue_dim); log_gains: (B, K, 3) and
        chroma: (B, 2, bins, bins) from ``model.stats``.
        """
        matrix, cast_logit, white, _ = self.correction_details(latent, cues, log_gains, chroma)
        return matrix, cast_logit, white

    def correction_details(
        self, latent: torch.Tensor, cues: torch.Tensor, log_gains: torch.Tensor, chroma: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``correction``'s results and the dead zone's input: the distance ``d`` (B,) of the neutralised white
        from neutral in log-chroma (the correction keeps ``d^2 / (d^2 + dead_zone^2)`` of itself)."""
        cfg = self.config
        parts = [latent] + ([cues] if cfg.use_cues else [])
        white = torch.zeros(latent.shape[0], 2, device=latent.device, dtype=latent.dtype)
        if self.chroma_net is not None:
            white = self.chroma_net(chroma)  # (B, 2)
            zeros = torch.zeros_like(white[:, :1])
            net_gains = torch.cat([white[:, :1], zeros, white[:, 1:]], dim=1)  # gains G/R, 1, G/B in log
            log_gains = torch.cat([log_gains, net_gains.unsqueeze(1)], dim=1)
            parts.append(white)
        out = self.head(self.head_dropout(torch.cat(parts, dim=1)))
        k = self.num_candidates
        cast_logit = out[:, 0]
        weights, residual = out[:, 1 : 1 + k], out[:, 1 + k : 4 + k]
        exposure, delta = out[:, 4 + k], out[:, 5 + k :]
        p = torch.sigmoid(cast_logit)[:, None]  # (B, 1)
        log_g = p * ((weights.unsqueeze(-1) * log_gains).sum(1) + residual)  # (B, 3) per-image part
        if cfg.use_global_mix:
            base = self.global_mix(log_gains)
            log_g = log_g + (p * base if cfg.gate_base else base)
        if cfg.anchor_white and self.chroma_net is not None:
            log_g = log_g + (p * log_gains[:, -1] if cfg.gate_base else log_gains[:, -1])
        log_g = cfg.max_log_gain * torch.tanh(cfg.cast_scale * log_g / cfg.max_log_gain)
        delta = cfg.max_delta * torch.tanh(delta.view(-1, 3, 3))
        if not cfg.full_matrix:
            delta = delta * p[..., None]
        eye = torch.eye(3, dtype=latent.dtype, device=latent.device)
        look = bounded_look(delta, cfg.max_look) if cfg.max_look > 0 else eye + delta
        matrix = look @ torch.diag_embed(log_g.exp())
        # Keep the luminance of the illuminant the gains neutralise.
        illuminant = (-log_g).exp()  # (B, 3)
        luma = LUMA.to(latent.device, latent.dtype)
        scale = (illuminant @ luma) / ((matrix @ illuminant.unsqueeze(-1)).squeeze(-1) @ luma).clamp(min=1e-6)
        exposure = cfg.max_log_exposure * torch.tanh(p[:, 0] * exposure / cfg.max_log_exposure)
        matrix = matrix * (scale * exposure.exp())[:, None, None]
        u, v = log_g[:, 0] - log_g[:, 1], log_g[:, 2] - log_g[:, 1]
        d2 = u * u + v * v
        if cfg.dead_zone > 0:  # "leave it": a white point within the estimator's own error of neutral
            matrix = eye + (d2 / (d2 + cfg.dead_zone**2))[:, None, None] * (matrix - eye)
        return matrix, cast_logit, white, d2.sqrt()

    def global_mix(self, log_gains: torch.Tensor) -> torch.Tensor:
        """(B, K, 3) log-gains of the estimates -> (B, 3) their learned linear combination."""
        return torch.einsum("kij,bkj->bi", self.mix, log_gains) + self.mix_bias

    def forward(
        self,
        thumb: torch.Tensor,
        cues: torch.Tensor,
        log_gains: torch.Tensor,
        chroma: torch.Tensor,
        sample: bool = True,
    ) -> dict[str, torch.Tensor]:
        """thumb: (B, 3, S, S) sRGB in [0, 1]. Returns recon, mu, logvar, matrix, cast_logit, white."""
        mu, logvar = self.encode(thumb)
        z = self.reparameterize(mu, logvar) if sample else mu
        matrix, cast_logit, white = self.correction(z, cues, log_gains, chroma)
        return {
            "recon": self.decode(z),
            "mu": mu,
            "logvar": logvar,
            "matrix": matrix,
            "cast_logit": cast_logit,
            "white": white,
        }
