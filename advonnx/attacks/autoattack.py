"""AutoAttack (Croce & Hein, ICML 2020): a fixed cascade of complementary attacks, each run only
on the samples that the earlier ones left robust; the authors' ``autoattack.py`` is the spec.

Versions (the authors' ``version``):

- ``standard``: APGD-CE → APGD-T → FAB-T → Square (5000 queries), every stage with the
  authors' settings (100 steps, 1 restart, 9 target classes or classes − 1);
- ``rand`` (randomized defenses): APGD-CE → APGD-DLR, each with EOT over 20 evaluations.

``stages`` replaces the version's list: each entry is a stage name (``apgd-ce``, ``apgd-dlr``,
``apgd-t``, ``fab-t``, ``square``, or any registered attack) or a table ``{name = ...,
<settings>}`` whose settings override the stage's (e.g. ``{name = "apgd-ce", steps = 20}``).
Stages are looked up in the attack registry when the cascade runs; every stage gets the
cascade's ``norm`` and ``eps`` and goes through advonnx's own checks (projection, value range,
success recomputed from its example).

Per sample the result records the stage whose example broke it (``AttackResult.broken_by``,
the ``broken_by`` column of result rows; ``clean`` = misclassified unattacked, empty =
robust). Robust accuracy under a cascade is an upper bound: a stronger attack may still break
what it leaves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import AdvonnxError
from ..xp import from_numpy, namespace
from ._batch import host_bool, scatter, take
from .base import Attack, AttackContext

# AutoAttack's stage names → (registered attack, the authors' settings)
STAGES: dict[str, tuple[str, dict[str, Any]]] = {
    "apgd-ce": ("apgd", {"loss": "ce"}),
    "apgd-dlr": ("apgd", {"loss": "dlr"}),
    "apgd-t": ("apgdt", {}),
    "fab-t": ("fab", {"targeted": True}),
    "square": ("square", {"max_queries": 5000}),
}
VERSIONS: dict[str, tuple] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "rand": ({"name": "apgd-ce", "eot_iter": 20}, {"name": "apgd-dlr", "eot_iter": 20}),
}


def _stage(entry) -> tuple[str, str, dict[str, Any]]:
    """(label, attack name, settings) of one stage entry."""
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise AdvonnxError(f"autoattack: a stage is a name or a table with a 'name' key, not {entry!r}")
    settings = {k: v for k, v in entry.items() if k != "name"}
    for key in ("norm", "eps"):
        if key in settings:
            raise AdvonnxError(
                f"autoattack: stage {entry['name']!r} takes the cascade's {key}; remove it from the stage"
            )
    label = entry["name"].lower()
    attack, base = STAGES.get(label, (label, {}))
    return label, attack, {**base, **settings}


class AutoAttack(Attack):
    name = "autoattack"
    aliases = ("aa",)
    summary = "AutoAttack cascade: APGD-CE, APGD-T, FAB-T, Square on still-robust samples (Croce & Hein 2020)"
    norms = ("linf", "l2")
    needs = "gradient"
    tasks = ("classification",)
    gradient_loss = "cotangent"

    def __init__(
        self, *, norm: str = "linf", eps: float = 8 / 255, version: str = "standard", stages: list | tuple | None = None
    ):
        super().__init__(norm=norm, eps=eps)
        if version not in VERSIONS:
            raise AdvonnxError(f"autoattack: version must be one of {', '.join(VERSIONS)}, not {version!r}")
        self.version = version
        entries = VERSIONS[version] if stages is None else stages
        if isinstance(entries, str) or not entries:
            raise AdvonnxError("autoattack: stages must be a non-empty list of stage names or tables")
        self.stages = [dict(e) if isinstance(e, dict) else e for e in entries]
        parsed = [_stage(e) for e in self.stages]
        labels = [p[0] for p in parsed]
        if len(set(labels)) != len(labels):
            raise AdvonnxError(f"autoattack: stage names repeat ({', '.join(labels)}); each stage once")
        from .registry import ATTACKS, make_attack

        for _, attack, settings in parsed:  # registered stages: settings checked now
            if attack in ATTACKS:
                make_attack(attack, norm=norm, eps=eps, **settings)

    def _build(self) -> list[tuple[str, Attack]]:
        from .registry import ATTACKS, make_attack

        built = []
        for label, attack, settings in (_stage(e) for e in self.stages):
            if attack not in ATTACKS:
                raise AdvonnxError(
                    f"autoattack stage {label!r} needs attack {attack!r}, which is not registered "
                    f"(available: {', '.join(sorted(ATTACKS))}); give `stages` without it"
                )
            built.append((label, make_attack(attack, norm=self.norm, eps=self.eps, **settings)))
        return built

    def run(self, ctx: AttackContext, x, labels):
        xp = namespace(x)
        stages = self._build()
        n = x.shape[0]
        robust = ~host_bool(ctx.is_adversarial(ctx.classify(x, np.arange(n)), labels, targeted=False))
        broken_by = np.where(robust, "", "clean").astype(object)
        out = x
        for label, stage in stages:
            active = np.nonzero(robust)[0]
            if active.shape[0] == 0:
                break
            res = stage(
                ctx.model,
                take(x, active),
                take(labels, active),
                rng=ctx.rng,
                gradient=ctx.gradient if stage.needs == "gradient" else "auto",
                max_queries=ctx.max_queries,
                **ctx.rows(active),
            )
            ctx.queries[active] += np.asarray(res.queries, dtype=np.int64)
            hit = host_bool(res.success)
            if not hit.any():
                continue
            out = scatter(out, active[hit], xp.take(res.x_adv, from_numpy(x, np.nonzero(hit)[0]), axis=0))
            robust[active[hit]] = False
            broken_by[active[hit]] = label
        ctx.broken_by = broken_by
        return out
