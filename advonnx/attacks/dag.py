"""Dense adversary generation (DAG; Xie, Wang, Zhang, Zhou, Xie, Yuille, ICCV 2017) for
segmentation, 2-D and 3-D.

Every pixel (voxel) ``t`` gets an adversarial target label ``l'_t``. Each iteration, over the
*active* pixels, ``r = ∇ Σ_t (Z_{l'_t}(x + R, t) − Z_{l_t}(x + R, t))``, then
``R ← R + gamma · (hi − lo) · r / ‖r‖∞`` (per sample; gamma in fractions of the value range), until no pixel is active or after ``steps``
iterations. This follows the authors' released MATLAB code, cihangxie/DAG @ 55505e2:

- ``code/fooling_seg_net.m`` L12 ``r = x * 0``; L21 the loop runs while pixels remain and
  ``itr < MAX_ITER``; L27–28 ``r_gain = step_length / max(abs(dr)); r = r + dr * r_gain``
  (the step normalized by ‖dr‖∞ and scaled by gamma = ``step_length``; the perturbation
  accumulates, the image itself is ``x + r``).
- ``code/forward_and_back_propogation_seg.m`` L16–24: pixels already at their target are
  masked out; L34–44 backward of a one-hot cotangent on the target class of the remaining
  pixels (the scores *before* softmax, L10–11 apply softmax only to read the prediction);
  L47–58 the same for the class they currently show, ``res = res_fool − res_pred``.
- ``code/demo.m`` L67–74 and ``code/generate_mapping.m``: the target map is a random mapping of
  the classes present to other classes, background kept.

``pixels`` chooses the active set: ``"correct"`` (default, the paper's Alg. 1 with the issue's
rule) takes pixels still predicted as their true label ``l_t`` (and whose target differs) and
subtracts ``Z_{l_t}``; ``"code"`` takes every pixel not yet at its target and subtracts the score of
the class it currently shows (the released code). One model evaluation for the prediction and
one vector-Jacobian product per sample and iteration, batched over samples; the cotangent holds
the whole dense mask, so no loop over pixels or classes. Untargeted runs build the target map
per sample as a random cyclic shift of the foreground classes (background kept when
``keep_background``; a derangement, so every foreground pixel has a target other than its
label). ``stop_fraction``: a sample stops when its active pixels are at most this fraction of
the pixels it started with (the authors use 0.01 of the foreground area; 0 = all reached).
Values are clipped to the value range after each step; with ``eps`` the perturbation is also
projected onto the eps-ball. gamma is a fraction of the value-range width ``hi − lo`` (the step
is ``gamma · (hi − lo) · r / ‖r‖∞``; the default 0.5/255 is half a grey level, the same for a
[0, 1] and a [0, 255] model).
"""

from __future__ import annotations

from ..errors import AdvonnxError
from ..xp import batch_view, flat, namespace, norms
from ._batch import put_rows
from .base import Attack, AttackContext


def class_onehot(labels, num_classes: int, class_axis: int, dtype):
    """Dense label map (N, *spatial) → one-hot score-shaped (class axis at ``class_axis``)."""
    xp = namespace(labels)
    oh = xp.astype(labels[..., None] == xp.arange(num_classes, dtype=labels.dtype), dtype)
    return xp.moveaxis(oh, -1, class_axis)


def permuted_targets(labels, num_classes: int, rng, *, keep_background: bool = True):
    """Per-sample random cyclic shift of the classes (foreground only when keep_background)."""
    xp = namespace(labels)
    n = labels.shape[0]
    lab = xp.astype(labels, xp.int64)
    if keep_background and num_classes >= 3:
        shift = rng.integers(1, num_classes - 1, (n,), like=lab)
        shift = xp.reshape(xp.astype(shift, xp.int64), (n,) + (1,) * (labels.ndim - 1))
        moved = (lab - 1 + shift) % (num_classes - 1) + 1
        return xp.where(lab == 0, lab, moved)
    shift = rng.integers(1, num_classes, (n,), like=lab)
    shift = xp.reshape(xp.astype(shift, xp.int64), (n,) + (1,) * (labels.ndim - 1))
    return (lab + shift) % num_classes


def dag_active(pred, labels, target, rule: str):
    """Pixels that contribute this iteration (see module docstring)."""
    if rule == "correct":
        return (pred == labels) & (target != labels)
    return pred != target


class DAG(Attack):
    name = "dag"
    summary = "Dense adversary generation for segmentation, ‖r‖∞-normalized steps (Xie et al. 2017); gamma in fractions of the value range"
    norms = ("linf", "l2")
    minimal_norm = True
    tasks = ("segmentation",)

    def __init__(
        self,
        *,
        norm: str = "linf",
        eps: float | None = None,
        steps: int = 200,
        gamma: float = 0.5 / 255,
        pixels: str = "correct",
        keep_background: bool = True,
        stop_fraction: float = 0.0,
    ):
        super().__init__(norm=norm, eps=eps)
        if steps < 1 or not gamma > 0:
            raise AdvonnxError("dag: steps must be >= 1 and gamma > 0")
        if pixels not in ("correct", "code"):
            raise AdvonnxError("dag: pixels must be 'correct' (still-correct pixels) or 'code' (not yet at target)")
        if not 0 <= stop_fraction < 1:
            raise AdvonnxError("dag: stop_fraction must lie in [0, 1)")
        self.steps = int(steps)
        self.gamma = float(gamma)
        self.pixels = pixels
        self.keep_background = bool(keep_background)
        self.stop_fraction = float(stop_fraction)

    def direction(self, ctx: AttackContext, x, pred, labels, target, idx):
        """``r`` of one iteration for rows ``idx`` and the active mask it used."""
        xp = namespace(x)
        c, axis = ctx.spec.num_classes, ctx.spec.class_axis
        act = dag_active(pred, labels, target, self.pixels)
        minus = labels if self.pixels == "correct" else pred
        w = xp.astype(act, x.dtype)
        cot = (class_onehot(target, c, axis, x.dtype) - class_onehot(minus, c, axis, x.dtype)) * xp.expand_dims(
            w, axis=axis
        )
        _, r = ctx.vjp(x, cot, idx)
        return r, act

    def run(self, ctx: AttackContext, x, labels):
        xp = namespace(x)
        n = x.shape[0]
        every = xp.arange(n)
        labels = xp.astype(labels, xp.int64)
        if ctx.targeted:
            target = labels
            labels = xp.astype(ctx.classify(x, every), xp.int64)
        else:
            target = permuted_targets(labels, ctx.spec.num_classes, ctx.rng, keep_background=self.keep_background)
        pred = xp.astype(ctx.classify(x, every), xp.int64)
        start = xp.sum(xp.astype(flat(dag_active(pred, labels, target, self.pixels)), xp.float64), axis=1)
        r_total = xp.zeros_like(x)
        x_adv = x
        active = xp.nonzero(start > 0)[0]
        for _ in range(self.steps):
            if active.shape[0] == 0:
                break
            xa, la, ta = (xp.take(a, active, axis=0) for a in (x_adv, labels, target))
            pa = xp.take(pred, active, axis=0)
            r, _ = self.direction(ctx, xa, pa, la, ta, active)
            rmax = norms(r, "linf")
            step = self.gamma * (ctx.hi - ctx.lo)
            gain = xp.where(rmax > 0, step / xp.where(rmax > 0, rmax, 1.0), 0.0)
            ra = xp.take(r_total, active, axis=0) + batch_view(xp.astype(gain, x.dtype), x.ndim) * r
            r_total = put_rows(r_total, active, ra)
            x0a = xp.take(x, active, axis=0)
            xa = ctx.clip(self.project(x0a, x0a + ra))
            x_adv = put_rows(x_adv, active, xa)
            pa = xp.astype(ctx.classify(xa, active), xp.int64)
            pred = put_rows(pred, active, pa)
            left = xp.sum(xp.astype(flat(dag_active(pa, la, ta, self.pixels)), xp.float64), axis=1)
            keep = (left > self.stop_fraction * xp.take(start, active, axis=0)) & (rmax > 0)
            active = xp.take(active, xp.nonzero(keep)[0], axis=0)
        return x_adv
