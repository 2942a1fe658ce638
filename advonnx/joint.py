"""Joint attacks on several inputs of one model, each with its own budget.

:class:`JointInputModel` wraps one :class:`advonnx.model.OnnxModel` per attacked input (the same
file, each with ``input_name`` set to that input, the others held as ``extras``) and shows
attacks a model with ONE input: the flat per-sample concatenation ("packed vector")

    u = [flat(x_1) / w_1, ..., flat(x_k) / w_k]      (shape (N, D), layout NF)

where ``w_i = eps_i / eps`` is input i's budget per unit of the attack's ``eps``. An eps-ball of
``u`` is then exactly the per-input budgets: linf, ``|δu| <= eps`` ⇔ ``|δx_i| <= eps_i`` for every
i (the product of the per-input balls); l2, the joint ball ``sum_i ‖δx_i‖₂² / w_i² <= eps²`` on
the scaled vector (not one ball per input). The value ranges become per-element bounds
``bounds = (lo, hi)``, (D,) arrays ``lo_i / w_i``, ``hi_i / w_i``, which ``AttackContext.clip``
and the final clipping of :class:`advonnx.attacks.base.Attack` broadcast against each sample.

Gradients: one gradient graph per attacked input (each OnnxModel's own, w.r.t. its input with
the others fed as held inputs), so every graph rewrite, cache and layout rule of the one-input
case applies unchanged; the packed gradient is ``[w_1 ∂L/∂x_1, ..., w_k ∂L/∂x_k]``. A joint
gradient costs k graph runs per sample, all counted as queries.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from .errors import AdvonnxError, ModelError
from .xp import namespace, to_numpy

# attacks that only use ctx.clip and the eps-ball (no range fractions, no minimal norms)
JOINT_ATTACKS = ("fgsm", "bim", "pgd", "apgd", "square")


def parse_attack_inputs(text: str) -> list[tuple[str, float | None]]:
    """``--attack-inputs``: ``a,b`` (each input gets ``--eps``) or ``a=0.01,b=0.05`` (a budget per
    input, in that input's value units); returns ``(name, eps or None)`` pairs."""
    pairs = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, value = part.partition("=")
        name = name.strip()
        eps = None
        if value.strip():
            from .budgets import parse_eps

            try:
                eps = parse_eps(value.strip())[0][0]
            except (AdvonnxError, ValueError, IndexError):
                eps = None
            if not eps or eps <= 0:
                raise AdvonnxError(
                    f"--attack-inputs {text!r}: budget {value.strip()!r} of {name!r} must be a number > 0"
                )
        pairs.append((name, eps))
    names = [n for n, _ in pairs]
    if not names or len(set(names)) != len(names) or not all(names):
        raise AdvonnxError(f"--attack-inputs {text!r}: give each input once, comma-separated (a,b or a=0.01,b=0.05)")
    given = [e is not None for _, e in pairs]
    if any(given) and not all(given):
        raise AdvonnxError(f"--attack-inputs {text!r}: give a budget for every input (a=0.01,b=0.05) or for none")
    return pairs


def check_joint_attack(name: str) -> None:
    """Refuse, in one line, an attack that does not run on several inputs jointly."""
    if name not in JOINT_ATTACKS:
        raise AdvonnxError(
            f"{name} does not attack several inputs jointly (--attack-inputs); use one of "
            f"{', '.join(JOINT_ATTACKS)}, or attack one input with --input"
        )


class JointInputModel:
    """``models``: one OnnxModel per attacked input (same file, ``spec.input_name`` each);
    ``weights``: budget per unit of eps of each (``eps_i = weights[i] * eps``; 1 = every input
    gets the attack's eps). ``shapes``: per-sample shape of each input (else taken from the
    first batch packed). Answers ``predict``, ``classify``, ``value_and_grad`` ... on packed
    vectors; ``pack`` / ``unpack`` convert (see module docstring)."""

    # Attack.__call__ refuses attacks outside JOINT_ATTACKS and clips to ``bounds``
    joint = True

    def __init__(self, models, weights=None, shapes=None):
        models = list(models)
        if len(models) < 2:
            raise ModelError("a joint attack needs at least two attacked inputs")
        first = models[0].spec
        self.names = [m.spec.input_name for m in models]
        if len(set(self.names)) != len(self.names):
            raise ModelError(f"{first.path}: attacked inputs {self.names} repeat one")
        for m in models:
            if m.spec.input_integer:
                raise ModelError(
                    f"{first.path}: input {m.spec.input_name!r} is integer ({m.spec.input_integer}); "
                    "joint attacks take floating-point inputs only"
                )
            if getattr(m, "inner", None) is not None:
                raise ModelError(f"{first.path}: joint attacks need plain models (no sliding windows)")
        self.models = models
        self.weights = [1.0] * len(models) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(models) or not all(w > 0 for w in self.weights):
            raise ModelError(f"{first.path}: give one budget weight > 0 per attacked input")
        self.held = tuple(e for e in first.extra_inputs if e[0] not in self.names)
        self.shapes = None if shapes is None else [tuple(int(d) for d in s) for s in shapes]
        self.bounds = None
        self._spec = replace(
            first,
            input_name=",".join(self.names),
            input_shape=(None, None),
            layout="NF",
            extra_inputs=self.held,
            fixed_batch=None,
            patch_size=(),
            notes=list(first.notes)
            + [
                "joint attack on "
                + ", ".join(f"{n} (eps x {w:g})" for n, w in zip(self.names, self.weights))
                + ": one packed vector, per-input budgets and value ranges"
            ],
        )
        if self.shapes is not None:
            self._set_shapes(self.shapes)

    def _set_shapes(self, shapes) -> None:
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        sizes = [int(np.prod(s)) for s in self.shapes]
        self.offsets = np.cumsum([0] + sizes)
        lo = np.concatenate(
            [np.full(n, m.spec.value_range[0] / w, np.float64) for n, m, w in zip(sizes, self.models, self.weights)]
        )
        hi = np.concatenate(
            [np.full(n, m.spec.value_range[1] / w, np.float64) for n, m, w in zip(sizes, self.models, self.weights)]
        )
        self.bounds = (lo.astype(np.float32), hi.astype(np.float32))
        self._spec = replace(
            self._spec, input_shape=(None, int(self.offsets[-1])), value_range=(float(lo.min()), float(hi.max()))
        )

    @property
    def spec(self):
        """The packed model's spec: ``input_name`` lists the attacked inputs (comma-separated),
        layout NF, ``value_range`` the envelope of the per-element ``bounds`` (reports only)."""
        return self._spec

    def __getattr__(self, name: str) -> Any:
        if name in ("models", "__setstate__"):
            raise AttributeError(name)
        return getattr(self.models[0], name)

    # -- packing ----------------------------------------------------------------------------
    def pack(self, inputs: dict):
        """``inputs``: name -> (N, ...) array of each attacked input (model layout, value units)
        → (N, D) packed vectors (float32, namespace of the first)."""
        missing = [n for n in self.names if n not in inputs]
        if missing:
            raise AdvonnxError(f"{self.spec.path}: joint attack needs values of {missing}")
        arrays = [inputs[n] for n in self.names]
        if self.shapes is None:
            self._set_shapes([tuple(a.shape[1:]) for a in arrays])
        for n, a, s in zip(self.names, arrays, self.shapes):
            if tuple(a.shape[1:]) != s:
                raise AdvonnxError(
                    f"{self.spec.path}: input {n!r} has samples of shape {tuple(a.shape[1:])}, "
                    f"the joint attack packs {s}"
                )
        xp = namespace(arrays[0])
        parts = [
            xp.reshape(xp.astype(xp.asarray(a), xp.float32), (a.shape[0], -1)) / np.float32(w)
            for a, w in zip(arrays, self.weights)
        ]
        return xp.concat(parts, axis=1)

    def unpack(self, u) -> dict:
        """(N, D) packed vectors → name -> (N, ...) input in model layout and value units, each
        clipped to its own value range (float32 rounding of ``u * w`` stays inside it)."""
        if self.shapes is None:
            raise AdvonnxError(f"{self.spec.path}: pack samples before unpacking (their shapes are unknown)")
        xp = namespace(u)
        out = {}
        for i, (n, m, w, s) in enumerate(zip(self.names, self.models, self.weights, self.shapes)):
            part = u[:, int(self.offsets[i]) : int(self.offsets[i + 1])] * np.float32(w)
            lo, hi = m.spec.value_range
            out[n] = xp.reshape(xp.clip(part, lo, hi), (u.shape[0], *s))
        return out

    def budgets(self, eps: float) -> dict[str, float]:
        """Each input's budget (its value units) at the attack's ``eps``."""
        return {n: float(eps) * w for n, w in zip(self.names, self.weights)}

    def input_norms(self, x, x_adv) -> list[dict]:
        """Per sample: name -> {"linf", "l2"} of that input's perturbation, in its value units."""
        a, b = self.unpack(x), self.unpack(x_adv)
        rows: list[dict[str, dict[str, float]]] = [{} for _ in range(x.shape[0])]
        for n in self.names:
            d = to_numpy(b[n]).astype(np.float64).reshape(x.shape[0], -1) - to_numpy(a[n]).astype(np.float64).reshape(
                x.shape[0], -1
            )
            for i in range(x.shape[0]):
                rows[i][n] = {"linf": float(np.abs(d[i]).max(initial=0.0)), "l2": float(np.linalg.norm(d[i]))}
        return rows

    def _feeds(self, u, extras, skip: int | None = None):
        """The unpacked attacked inputs as held inputs of ``models[skip]`` (all when None),
        beside the held ``extras``; with the part of ``skip`` returned separately."""
        parts = self.unpack(u)
        held = dict(extras or {})
        held.update({n: p for j, (n, p) in enumerate(parts.items()) if j != skip})
        return (None if skip is None else parts[self.names[skip]]), held

    # -- the model interface ----------------------------------------------------------------
    def predict(self, x, *, extras=None):
        x0, held = self._feeds(x, extras, 0)
        return self.models[0].predict(x0, extras=held)

    def attack_scores(self, x, *, extras=None):
        x0, held = self._feeds(x, extras, 0)
        return self.models[0].attack_scores(x0, extras=held)

    def predict_both(self, x, *, extras=None):
        x0, held = self._feeds(x, extras, 0)
        return self.models[0].predict_both(x0, extras=held)

    def classify(self, x, *, votes: int | None = None, extras=None):
        x0, held = self._feeds(x, extras, 0)
        return self.models[0].classify(x0, votes=votes, extras=held)

    @property
    def one_pass(self) -> bool:
        return all(m.one_pass for m in self.models)

    def gradient_mode(
        self,
        requested: str = "auto",
        *,
        loss: str | None = None,
        scale_free: bool = False,
        with_decisions: bool = False,
    ) -> str:
        """``exact`` when every attacked input has exact gradients, else ``estimated`` (the graph
        variants probed are those :meth:`value_and_grad` runs: decisions from the first input's)."""
        modes = {
            m.gradient_mode(requested, loss=loss, scale_free=scale_free, with_decisions=with_decisions and k == 0)
            for k, m in enumerate(self.models)
        }
        return "exact" if modes == {"exact"} else "estimated"

    def straight_through_ops(self) -> list[str]:
        return sorted({op for m in self.models for op in m.straight_through_ops()})

    def gradient_label(self, mode: str) -> str:
        return "exact+straight-through" if mode == "exact" and self.straight_through_ops() else mode

    def value_and_grad(
        self,
        x,
        y=None,
        *,
        loss: str = "ce",
        gradient: str = "auto",
        cotangent=None,
        mask=None,
        rng=None,
        counter=None,
        scale_free: bool = False,
        with_decisions: bool = False,
        extras=None,
    ):
        """Per-sample loss and its gradient w.r.t. the packed ``x``: each input's gradient (its
        own gradient graph, the other inputs held at their current values) times its weight,
        packed. Arguments as :meth:`advonnx.model.OnnxModel.value_and_grad`; every graph run is
        counted. ``with_decisions``: the decisions of the first input's run."""
        xp = namespace(x)
        parts = self.unpack(x)
        grads, value, decisions = [], None, None
        for i, (m, w) in enumerate(zip(self.models, self.weights)):
            held = dict(extras or {})
            held.update({n: p for j, (n, p) in enumerate(parts.items()) if j != i})
            first = i == 0
            out = m.value_and_grad(
                parts[self.names[i]],
                y,
                loss=loss,
                gradient=gradient,
                cotangent=cotangent,
                mask=mask,
                rng=rng,
                counter=counter,
                scale_free=scale_free,
                with_decisions=with_decisions and first,
                extras=held,
            )
            if first:
                value = out[0]
                decisions = out[2] if with_decisions else None
            grads.append(xp.reshape(xp.astype(out[1], x.dtype), (x.shape[0], -1)) * w)  # ∂L/∂u_i = w_i ∂L/∂x_i
        grad = xp.concat(grads, axis=1)
        return (value, grad, decisions) if with_decisions else (value, grad)


def joint_dataset(model: JointInputModel, data):
    """``data`` (loaded for the first attacked input, the others among its ``extras``) with ``x``
    the packed vectors and ``extras`` only the inputs held fixed."""
    # packed whole: a streamed dataset (SampleArray) is read here once
    first = data.x if isinstance(data.x, np.ndarray) else data.x[:]
    inputs = {model.names[0]: first, **{n: data.extras[n] for n in model.names[1:]}}
    packed = to_numpy(model.pack(inputs))
    held = {k: v for k, v in data.extras.items() if k not in model.names}
    return replace(data, x=packed, extras=held)
