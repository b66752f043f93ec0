"""Layer priors: generation-free scores of every layer from one pass over the training pairs.

The pass (`methods.train.span_means`, the same one DiffMean makes) keeps, per pair `i` and
layer `l`, the block output averaged over the positive completion's tokens, `p_i`, and over
the negative completion's tokens, `n_i` (n pairs). The DiffMean direction is
`v = mean_i (p_i - n_i)`, `u = v / |v|`. From these, per layer:

**Navigator** (LayerNavigator, NeurIPS 2025). Project both classes on `u`: `a_i = p_i·u`,
`b_i = n_i·u`; class means `ā`, `b̄`; grand mean `μ = (ā + b̄) / 2` (the classes have n
points each).

    S_b = n (ā - μ)² + n (b̄ - μ)²  =  (n / 2) (ā - b̄)²       between-class scatter along v
    S_t = Σ_i (a_i - μ)² + Σ_i (b_i - μ)²                      total scatter along v
    d   = S_b / S_t                     = vᵀS_b v / vᵀS_t v with the scatter matrices
    c   = mean_i cos(p_i - n_i, v)
    score = d + c

`d` lies in [0, 1] (the share of the projections' variance the class explains; 1 when every
positive projects to one value and every negative to another), `c` in [-1, 1] (1 when every
pair's difference is parallel to v); a layer with v = 0 scores 0 on both.

**Lens** (logit-lens alignment, LAP 2026). The direction read through the final norm and the
head, `z = head(norm(v))` over the vocabulary, standardised to `ẑ = (z - mean z) / std z`;
then `lens = mean_i (mean_{t in A_p,i} ẑ_t - mean_{t in A_n,i} ẑ_t)`: by how many vocabulary
standard deviations the direction, as the model would read it out, already lifts the positive
completions' tokens over the negative ones'. Standardising makes it a unit-free number that
compares across layers (the head reads `norm(v)`, whose scale is set by the norm's weights,
not by the layer) and leaves it unchanged by any rescaling of v; tokens both completions share
cancel.

**Gain** (DiffMean at a fixed kl; no training). v, scaled by the m at which `kl` (the mean
per-token KL(unsteered ‖ steered) on the unsteered model's own answers to neutral prompts,
`scoring.kl`) reaches a small fixed value (`PRIORS["kl"]`, 0.1 nats per token), scored on the
test pairs: `gain = mean pref_odds(steered) - mean pref_odds(unsteered)`. So layers compare at
the same cost in fluency. m is found from a geometric grid (one batch, per-row m) scaled to
the layer's stream (`m_at_kl`), then a finer grid inside the first bracket, then log-log
interpolation between the two nearest values.

**Recommended layers**: the `top` layers (3) by mean rank of score, lens and gain (each
ranked among the eligible layers, best first; a missing value ranks last; ties by the lower
mean rank, then the higher gain, then the higher navigator score), eligible being those with
`window[0]·L <= l <= window[1]·L` (0.2 and 0.9 by default). Ranks rather than values: the
three are on unrelated scales and none is calibrated against the others. The window because
two of the scores are biased at the ends of the stack: at the bottom the stream still carries
the completion tokens themselves, so on short answers (" Yes" / " No") the classes separate
perfectly and every difference points the same way (d ≈ c ≈ 1) for reasons that have nothing
to do with the concept; at the top the stream is already the output, so the lens is near its
maximum by construction and a vector there mostly shifts the next token's logits. Published
practice agrees (heretic searches 0.4L-0.9L; refusal-direction work drops the last 20%);
0.2L keeps the middle-low layers that work well on small models. `window=(0, 1)` turns it off.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from tqdm.auto import tqdm

from steerfront.data import EncodedPair
from steerfront.data.prompts import neutral_prompts
from steerfront.defaults import PRIORS
from steerfront.errors import SteerfrontError
from steerfront.lm import LM
from steerfront.memory import MemoryCache
from steerfront.methods.interventions import Intervention
from steerfront.methods.train import span_means
from steerfront.scoring.evaluate import evaluate
from steerfront.scoring.kl import kl_scores, unsteered_answers

# kl of a vector intervention at each value of m (mean over prompts and tokens), in nats.
KLOf = Callable[[Intervention, np.ndarray], np.ndarray]
COLUMNS = ("d", "c", "score", "lens", "gain", "m")
RANKED = ("score", "lens", "gain")
_CACHE_BYTES = 512 << 20


@dataclass
class LayerScores:
    """Per scored layer (`layers`, ascending): the navigator's `d`, `c` and `score = d + c`,
    `lens`, and, when measured, `gain` and the `m` it was measured at (NaN where kl never
    reached its target); `rank` is the mean rank (NaN outside the window), `recommended` the
    chosen layers, best first."""

    layers: list[int]
    n_layers: int
    d: np.ndarray
    c: np.ndarray
    lens: np.ndarray
    gain: np.ndarray | None = None
    m: np.ndarray | None = None
    kl: float | None = None
    window: tuple[int, int] = (0, 0)
    rank: np.ndarray = field(default_factory=lambda: np.zeros(0))
    recommended: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def score(self) -> np.ndarray:
        return self.d + self.c

    def rows(self) -> list[dict]:
        """One dict per layer; NaN (and an unmeasured gain) as None."""
        out = []
        for j, layer in enumerate(self.layers):
            row = {"layer": layer}
            for name in COLUMNS:
                values = getattr(self, name)
                row[name] = None if values is None else _number(values[j])
            row["in_window"] = self.window[0] <= layer <= self.window[1]
            row["rank"] = _number(self.rank[j])
            row["recommended"] = layer in self.recommended
            out.append(row)
        return out

    def document(self) -> dict:
        """The JSON document `steerfront layers --json` prints (and writes as layers.json)."""
        return {
            "n_layers": self.n_layers,
            "kl": self.kl,
            "window": list(self.window),
            "recommended": list(self.recommended),
            "rows": self.rows(),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def _number(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None


def navigator(pos: torch.Tensor, neg: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """LayerNavigator's discriminability `d` and consistency `c` per layer (module docstring),
    from per-pair span means `pos`, `neg` of shape (n_pairs, n_layers, d) (or (n_pairs, d) for
    one layer). Computed in fp64."""
    pos, neg = pos.double(), neg.double()
    diff = pos - neg
    v = diff.mean(0)
    norm = v.norm(dim=-1)
    u = v / norm.clamp(min=torch.finfo(torch.float64).tiny)[..., None]
    a, b = (pos * u).sum(-1), (neg * u).sum(-1)  # (n, layers)
    mean_a, mean_b = a.mean(0), b.mean(0)
    mu = (mean_a + mean_b) / 2
    n = pos.shape[0]
    between = n * ((mean_a - mu) ** 2 + (mean_b - mu) ** 2)
    total = ((a - mu) ** 2).sum(0) + ((b - mu) ** 2).sum(0)
    d = torch.where(total > 0, between / total.clamp(min=1e-300), torch.zeros_like(total))
    lengths = diff.norm(dim=-1)
    cos = (diff * u).sum(-1) / lengths.clamp(min=1e-300)
    c = torch.where(lengths > 0, cos, torch.zeros_like(cos)).mean(0)
    zero = norm == 0
    d, c = d.masked_fill(zero, 0.0), c.masked_fill(zero, 0.0)
    return d.cpu().numpy(), c.cpu().numpy()


def token_weights(encoded: Sequence[EncodedPair], vocab: int) -> torch.Tensor:
    """`w` (vocab,) with `w·ẑ = mean_i (mean of ẑ over A_p,i's tokens - over A_n,i's)`."""
    w = torch.zeros(vocab, dtype=torch.float64)
    for e in encoded:
        for tokens, sign in ((e.positive, 1.0), (e.negative, -1.0)):
            ids = torch.tensor(tokens, dtype=torch.long)
            w.index_add_(
                0, ids, torch.full((len(ids),), sign / (len(ids) * len(encoded)), dtype=w.dtype)
            )
    return w


@torch.no_grad()
def lens(lm: LM, vectors: torch.Tensor, encoded: Sequence[EncodedPair]) -> np.ndarray:
    """Logit-lens alignment of each direction in `vectors` (layers, d) with the positive
    completions of `encoded` (module docstring): standardised `head(norm(v))`, positive
    completion tokens' mean minus negative ones', averaged over pairs."""
    if not encoded:
        raise SteerfrontError("lens: no pairs to read the directions against")
    normed = lm.model.model.norm(vectors.to(device=lm.device, dtype=lm.dtype)[None])[0]
    z = lm.head(normed).double()
    z = (z - z.mean(-1, keepdim=True)) / z.std(-1, keepdim=True).clamp(min=1e-300)
    w = token_weights(encoded, z.shape[-1]).to(z.device)
    return (z @ w).cpu().numpy()


def m_at_kl(
    kl_of: Callable[[np.ndarray], np.ndarray],
    target: float,
    scale: float,
    grid: int = 8,
    refine: int = 3,
    shifts: int = 2,
) -> float:
    """The smallest m > 0 at which `kl_of(m)` (an array of m in, of kl out: one batched call
    per round) reaches `target`: `grid` values `scale·2^-(grid-1) .. scale`, moved `grid - 1`
    octaves up or down (at most `shifts` times) until one bracket `kl(lo) < target <= kl(hi)`
    holds, then `refine` values between, then log-log interpolation in the last bracket.
    NaN if no bracket is found."""
    if not (target > 0 and math.isfinite(target)):
        raise SteerfrontError(f"kl target must be a positive number of nats, not {target}")
    ms = scale * 2.0 ** np.arange(-(grid - 1), 1)
    for attempt in range(shifts + 1):
        kls = np.asarray(kl_of(ms), dtype=np.float64)
        hit = np.flatnonzero(kls >= target)
        if len(hit) and hit[0] > 0:
            break
        if attempt == shifts:
            return math.nan
        ms = ms * 2.0 ** ((grid - 1) * (1 if not len(hit) else -1))  # overlap at one end
    j = hit[0]
    lo, hi, k_lo, k_hi = ms[j - 1], ms[j], kls[j - 1], kls[j]
    if refine:
        inner = np.geomspace(lo, hi, refine + 2)[1:-1]
        k_in = np.asarray(kl_of(inner), dtype=np.float64)
        ms_all = np.concatenate([[lo], inner, [hi]])
        kls_all = np.concatenate([[k_lo], k_in, [k_hi]])
        j = int(np.flatnonzero(kls_all >= target)[0])
        lo, hi, k_lo, k_hi = ms_all[j - 1], ms_all[j], kls_all[j - 1], kls_all[j]
    if k_lo <= 0:  # kl ~ m² near 0: interpolate on m² instead of log m
        return float(hi * math.sqrt(target / k_hi))
    t = (math.log(target) - math.log(k_lo)) / (math.log(k_hi) - math.log(k_lo))
    return float(math.exp(math.log(lo) + t * (math.log(hi) - math.log(lo))))


def neutral_kl(
    lm: LM,
    prompts: int = PRIORS["kl_prompts"],
    tokens: int = PRIORS["kl_tokens"],
    cache: MemoryCache | None = None,
) -> KLOf:
    """`kl(intervention, m)` from `scoring.kl`: the unsteered model's answers to the first
    `prompts` built-in neutral prompts (generated once, cached on disk), the first `tokens`
    tokens of each scored; the mean over prompts per m."""
    answers = unsteered_answers(lm, neutral_prompts(count=prompts))
    cache = cache if cache is not None else MemoryCache(_CACHE_BYTES)

    def kl_of(intervention: Intervention, m: np.ndarray) -> np.ndarray:
        return kl_scores(lm, intervention, m, answers, cache=cache, tokens=tokens).kl.mean(0)

    return kl_of


@torch.no_grad()
def gain_at_kl(
    lm: LM,
    interventions: Sequence[Intervention | None],
    scales: Sequence[float],
    test: list[EncodedPair],
    kl_of: KLOf,
    target: float = PRIORS["kl"],
    cache: MemoryCache | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Per intervention (of any form; None: none to score): the m where `kl_of` reaches
    `target`, searched from `scales[j]` down (`m_at_kl`), and the gain in mean test pref_odds
    over the unsteered model there; `(gain, m)`, NaN where kl never reached it."""
    if not test:
        raise SteerfrontError("gain: no test pairs to score")
    cache = cache if cache is not None else MemoryCache(_CACHE_BYTES)
    base = float(evaluate(lm, test, None, cache=cache).pref.mean())
    gains, ms = np.full(len(interventions), np.nan), np.full(len(interventions), np.nan)
    for j, intervention in enumerate(
        tqdm(interventions, desc="gain at fixed kl", disable=not progress)
    ):
        if intervention is None:
            continue
        m = m_at_kl(lambda grid, i=intervention: kl_of(i, grid), target, scales[j])
        if math.isnan(m):
            continue
        steered = evaluate(lm, test, intervention, m=[m], cache=cache).pref.mean()
        gains[j], ms[j] = float(steered) - base, m
    return gains, ms


def window_layers(n_layers: int, window: tuple[float, float]) -> tuple[int, int]:
    """The first and last layer (inclusive) with `window[0]·L <= layer <= window[1]·L`."""
    lo, hi = window
    if not 0 <= lo <= hi <= 1:
        raise SteerfrontError(f"window must be two fractions 0 <= lo <= hi <= 1, not {lo}, {hi}")
    first, last = math.ceil(lo * n_layers - 1e-9), min(n_layers - 1, math.floor(hi * n_layers))
    return first, last


def recommend(
    layers: Sequence[int],
    columns: dict[str, np.ndarray | None],
    window: tuple[int, int],
    top: int = PRIORS["top"],
) -> tuple[list[int], np.ndarray]:
    """The `top` layers by mean rank over the `columns` given (higher is better; NaN ranks
    last) among `layers` inside `window` (first, last; all layers if none is); the mean rank
    of each layer (NaN outside). Ties: the higher gain, then the higher score, then the lower
    layer."""
    if top < 1:
        raise SteerfrontError(f"top must be at least 1, not {top}")
    layers = np.asarray(layers)
    inside = (layers >= window[0]) & (layers <= window[1])
    if not inside.any():
        inside[:] = True
    used = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items() if v is not None}
    ranks = []
    for values in used.values():
        x = np.where(np.isfinite(values[inside]), values[inside], -np.inf)
        ranks.append(rankdata(-x, method="average"))
    mean = np.full(len(layers), np.nan)
    mean[inside] = np.mean(ranks, axis=0)
    gain = used.get("gain", np.zeros(len(layers)))
    score = used.get("score", np.zeros(len(layers)))
    order = sorted(
        np.flatnonzero(inside),
        key=lambda j: (mean[j], -np.nan_to_num(gain[j], nan=-np.inf), -score[j], layers[j]),
    )
    return [int(layers[j]) for j in order[:top]], mean


def plot_layers(scores: LayerScores, title: str, path: Path) -> None:
    """Layers across, each score up (min-max scaled over the scored layers, so the curves
    share one axis; the raw values are in the table), the window shaded and the recommended
    layers marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(scores.layers)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.axvspan(scores.window[0] - 0.5, scores.window[1] + 0.5, color="0.93", zorder=0)
    curves = [("d", "navigator d", ":"), ("c", "navigator c", ":"), ("score", "d + c", "-")]
    curves.append(("lens", "lens", "-"))
    if scores.gain is not None:
        curves.append(("gain", f"gain at kl {scores.kl:g}", "-"))
    for name, label, style in curves:
        values = getattr(scores, name)
        if values is None:
            continue
        values = np.asarray(values, dtype=np.float64)
        finite = values[np.isfinite(values)]
        if not finite.size:
            continue
        span = finite.max() - finite.min()
        scaled = (values - finite.min()) / span if span > 0 else np.full_like(values, 0.5)
        ax.plot(x, scaled, style, marker="o", ms=3, label=label)
    for rank, layer in enumerate(scores.recommended, start=1):
        ax.axvline(layer, color="black", ls="--", lw=1, alpha=0.6)
        ax.annotate(f"#{rank}", (layer, 1.02), ha="center", fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel("score (min-max scaled over layers)")
    ax.set_ylim(-0.05, 1.1)
    ax.set_title(f"{title}\n(shaded: window; dashed: recommended layers)", fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def check_layers(layers: Sequence[int] | None, n_layers: int, flag: str = "layers") -> list[int]:
    """`layers` sorted and deduplicated (every layer if None); one out of range is refused."""
    if layers is None:
        return list(range(n_layers))
    if not layers:
        raise SteerfrontError(f"{flag}: no layers given")
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise SteerfrontError(f"{flag}: layer {bad[0]} is out of range (layers 0..{n_layers - 1})")
    return sorted(set(layers))


def layer_scores(
    lm: LM,
    train: list[EncodedPair],
    test: list[EncodedPair] | None = None,
    layers: Sequence[int] | None = None,
    top: int = PRIORS["top"],
    window: tuple[float, float] = PRIORS["window"],
    kl: float = PRIORS["kl"],
    kl_of: KLOf | None = None,
    progress: bool = False,
) -> LayerScores:
    """Every layer's priors (module docstring) from one pass over `train`; the gain at `kl`
    nats on `test` unless `test` is None (`kl_of` defaults to `neutral_kl(lm)`); the
    recommended layers among `layers` (all by default)."""
    if not train:
        raise SteerfrontError("layer priors: no training pairs")
    chosen = check_layers(layers, lm.n_layers)
    span = window_layers(lm.n_layers, window)
    if test is not None and not (kl > 0 and math.isfinite(kl)):
        raise SteerfrontError(f"kl must be a positive number of nats, not {kl}")
    seconds = {}
    clock = time.perf_counter()
    pos, neg = span_means(lm, train)
    seconds["pass"] = time.perf_counter() - clock
    clock = time.perf_counter()
    vectors = (pos - neg).mean(0)  # (layers, d): DiffMean's vectors
    d, c = navigator(pos[:, chosen], neg[:, chosen])
    lens_values = lens(lm, vectors[chosen], train)
    seconds["navigator_lens"] = time.perf_counter() - clock
    scores = LayerScores(chosen, lm.n_layers, d, c, lens_values, window=span, seconds=seconds)
    if test is not None:
        clock = time.perf_counter()
        cache = MemoryCache(_CACHE_BYTES)
        kl_of = kl_of if kl_of is not None else neutral_kl(lm, cache=cache)
        stream = ((pos + neg) / 2)[:, chosen].norm(dim=-1).median(0).values  # (layers,)
        scales = (stream / vectors[chosen].norm(dim=-1).clamp(min=1e-30)).tolist()
        diffmeans = [
            Intervention("vector", layer, {"v": vectors[layer].to(lm.device)})
            if bool(vectors[layer].any())
            else None
            for layer in chosen
        ]
        gain, m = gain_at_kl(lm, diffmeans, scales, test, kl_of, kl, cache, progress)
        scores.gain, scores.m, scores.kl = gain, m, kl
        seconds["gain"] = time.perf_counter() - clock
    del pos, neg
    columns = {"score": scores.score, "lens": scores.lens, "gain": scores.gain}
    scores.recommended, scores.rank = recommend(chosen, columns, span, top)
    return scores
