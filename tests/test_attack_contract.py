"""The attack contract, checked for every registered attack (foolbox 3's table of attacks over
model fixtures): the result stays in the value range, in the eps budget (linf / l2 / l0) or, for
a minimal-norm attack run without eps, reports the norm of the example it returns; its success
equals the model's own decision on the returned example (judged here, independently of
advonnx's rule); a query-only attack never spends more than the caller's budget; and the loop
runs on array-api-strict arrays with NumPy's result.

Adding an attack: one module (registered) and one line in ``CONTRACT``. A registered attack
without a line fails ``test_every_registered_attack_has_a_contract_entry``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from test_blackbox import linear_image
from test_paper_attacks import tiny_segmenter

import advonnx
from advonnx.attacks import ATTACKS, Attack, AttackContext, attack_class, make_attack
from advonnx.attacks.registry import ALIASES, register, unregister
from advonnx.errors import AdvonnxError
from advonnx.oracles import EstimatorConfig
from advonnx.xp import Random, namespace
from models import save, small_cnn, softmax_regression

CNNS = ("cnn", "cnn_nhwc", "cnn_softmax", "cnn_binary", "cnn_fixed_batch")
IMAGES = ("image", "image_nhwc_softmax", "image_features", "image_ncdhw")
CNN_ALL = CNNS + ("image",)  # the tiny CNNs resist small budgets; the linear image model breaks
SURROGATE = "<surrogate>"  # replaced by the path of a second tiny CNN


@dataclass(frozen=True)
class Case:
    """One run of an attack: its settings, the model fixtures it runs on (the first also under
    array-api-strict), the gradient mode, a targeted run, and whether it must break a sample."""

    settings: dict[str, Any] = field(default_factory=dict)
    models: tuple[str, ...] = ("cnn",)
    gradient: str = "auto"
    targeted: bool = False
    # breaks at least one sample on some of its models (an identity attack fails); False where
    # the tiny models resist these small settings (dense maps: half the pixels must flip)
    breaks: bool = True
    strict: bool = True  # run under array-api-strict too (else: say why in ``why``)
    why: str = ""


# One line per registered attack (cases: tuples). Settings small: this runs in the fast loop.
CONTRACT: dict[str, tuple[Case, ...]] = {
    "fgsm": (Case(dict(norm="linf", eps=0.1), CNN_ALL), Case(dict(norm="l2", eps=2.0), CNN_ALL, "estimated")),
    "bim": (Case(dict(norm="linf", eps=0.1, steps=3), CNN_ALL, "estimated"),),
    "pgd": (
        Case(dict(norm="linf", eps=0.1, steps=3), CNN_ALL),
        Case(dict(norm="l2", eps=2.0, steps=3, restarts=2), CNN_ALL, "estimated"),
        Case(dict(norm="linf", eps=0.5, steps=10), ("linear4",), targeted=True),
    ),
    "apgd": (
        Case(dict(norm="linf", eps=0.1, steps=6), CNN_ALL),
        Case(dict(norm="l2", eps=2.0, steps=6, loss="dlr", restarts=2), ("cnn5", "image")),
        Case(dict(norm="linf", eps=0.5, steps=4), ("seg",)),
    ),
    "apgdt": (Case(dict(norm="linf", eps=0.1, steps=5), ("cnn", "cnn_nhwc", "cnn5", "image")),),
    "deepfool": (
        Case(dict(norm="l2", steps=10), ("image", "cnn4")),
        Case(dict(norm="linf", steps=50), ("cnn4",), targeted=True),
    ),
    "jsma": (Case(dict(gamma=0.3), ("image", "cnn4")), Case(dict(gamma=0.3), ("cnn4",), targeted=True, breaks=False)),
    "cw": (Case(dict(steps=10, binary_search_steps=2, step_size=0.05), ("image", "cnn4")),),
    "dag": (
        Case(dict(gamma=0.02, steps=10), ("seg",), breaks=False),
        Case(dict(gamma=0.02, steps=10, norm="l2", eps=1.0), ("seg",), breaks=False),
    ),
    "fab": (
        Case(dict(norm="linf", steps=10, restarts=2), ("cnn4", "linear4")),
        Case(dict(norm="l2", eps=1.0, steps=10), ("linear4",)),
    ),
    "fab_t": (Case(dict(norm="l2", steps=10, n_target_classes=2), ("cnn4", "linear4")),),
    "segpgd": (
        Case(dict(norm="linf", eps=0.5, steps=3), ("seg",)),
        Case(dict(norm="l2", eps=1.0, steps=3), ("seg",), targeted=True, breaks=False),
    ),
    "nes": (Case(dict(norm="linf", eps=0.1, steps=5, samples=8), IMAGES),),
    "spsa": (Case(dict(norm="l2", eps=1.0, steps=5, samples=8), IMAGES),),
    "square": (
        Case(dict(norm="linf", eps=0.1, max_queries=60), IMAGES),
        Case(dict(norm="l2", eps=1.0, max_queries=60), IMAGES),
    ),
    "hsj": (
        Case(dict(norm="l2", eps=1.0, max_queries=300), IMAGES),
        Case(dict(norm="linf", eps=0.1, max_queries=300), IMAGES),
        Case(dict(norm="l2", max_queries=200), ("linear4",)),
    ),
    "autoattack": (
        Case(
            dict(
                norm="l2",
                eps=2.0,
                stages=[
                    {"name": "apgd-ce", "steps": 4},
                    {"name": "apgd-t", "steps": 4},
                    {"name": "fab-t", "steps": 4},
                    {"name": "square", "max_queries": 30},
                ],
            ),
            CNNS[:4] + ("image",),
        ),
    ),
    "transfer": (
        Case(dict(norm="linf", eps=0.3, surrogate=SURROGATE, via="pgd", via_settings={"steps": 3}), breaks=False),
    ),
    "uap": (
        Case(dict(norm="linf", eps=0.1, epochs=2, batch_size=3), ("cnn", "cnn_nhwc", "image")),
        Case(dict(norm="l2", eps=3.0, epochs=2, batch_size=4), ("image",)),
    ),
    "certify": (
        Case(
            dict(eps=0.25, n0=10, n=50),
            ("cnn", "seg"),
            strict=False,
            why="certificates, not attacks: Smoother runs on host arrays",
        ),
    ),
}


def missing_entries() -> list[str]:
    """Registered attacks without a contract line."""
    return sorted(set(ATTACKS) - set(CONTRACT))


def test_every_registered_attack_has_a_contract_entry():
    assert missing_entries() == [], "add a line to CONTRACT in tests/test_attack_contract.py"
    assert sorted(set(CONTRACT) - set(ATTACKS)) == [], "CONTRACT names attacks that are not registered"


class _Toy(Attack):
    """A toy attack: one signed step of eps along a fixed random direction."""

    name = "toy_contract"
    aliases = ("toy-contract",)
    summary = "toy"
    needs = "scores"

    def run(self, ctx, x, labels):
        xp = namespace(x)
        noise = xp.asarray(np.random.default_rng(0).choice([-1.0, 1.0], tuple(x.shape)).astype(np.float32))
        return ctx.clip(x + self.eps * noise)


def test_a_registered_attack_without_a_contract_line_is_detected(models):
    register(_Toy)
    try:
        assert missing_entries() == ["toy_contract"]
        assert attack_class("TOY-CONTRACT") is _Toy
        with pytest.raises(AdvonnxError, match="taken"):
            register(type("Clash", (_Toy,), {"name": "clash", "aliases": ("pgd",)}))
        # one contract line is all it takes; the toy then meets the contract
        _check(models, "toy_contract", Case(dict(norm="linf", eps=0.3), ("cnn",), breaks=False), "cnn")
    finally:
        unregister("toy_contract")
    assert "toy_contract" not in ATTACKS and "toy-contract" not in ALIASES and missing_entries() == []


def test_the_checks_catch_a_broken_base(models, monkeypatch):
    """The contract fails when the base stops projecting onto the budget or stops re-judging."""
    case = Case(dict(norm="linf", eps=0.02, steps=5, step_size=0.02), ("image",))
    _check(models, "pgd", case, "image")
    with monkeypatch.context() as m:
        m.setattr(Attack, "project", lambda self, x, x_adv: x_adv)
        with pytest.raises(AssertionError, match="budget"):
            _check(models, "pgd", case, "image")
    with monkeypatch.context() as m:
        m.setattr(AttackContext, "is_adversarial", lambda self, pred, ref, targeted=None: pred == pred)
        with pytest.raises(AssertionError, match="re-judged"):
            _check(models, "pgd", case, "image")


def test_aliases_are_declared_on_the_classes():
    for name, cls in ATTACKS.items():
        assert cls.name == name
        for alias in vars(cls).get("aliases", ()):
            assert attack_class(alias) is cls
    assert set(ALIASES.values()) <= set(ATTACKS)


# -- fixtures ------------------------------------------------------------------------------------

_CNN_KW = {
    "cnn": {},
    "cnn_nhwc": {"nhwc": True},
    "cnn_softmax": {"head": "softmax"},
    "cnn_binary": {"head": "sigmoid_binary"},
    "cnn_fixed_batch": {"batch": 1},
    "cnn4": {"classes": 4},
    "cnn5": {"classes": 5},
}
_IMAGE_KW = {
    "image": {},
    "image_nhwc_softmax": {"nhwc": True, "probabilities": True},
    "image_features": {"features": True},
    "image_ncdhw": {"volume": True},
}


class _Models:
    """Tiny models built on first use (module scope), with their test inputs."""

    def __init__(self, folder):
        self.folder = folder
        self.cache: dict[str, tuple] = {}

    def __call__(self, key: str):
        if key not in self.cache:
            self.cache[key] = self._build(key)
        return self.cache[key]

    def _build(self, key: str):
        rng = np.random.default_rng(0)
        if key in _CNN_KW:
            proto, lo, hi = small_cnn(**_CNN_KW[key]), 0.0, 1.0
        elif key in _IMAGE_KW:
            proto, lo, hi = linear_image(**_IMAGE_KW[key]), 0.3, 0.7
        elif key == "linear4":
            proto, lo, hi = softmax_regression(d=12, classes=4)[0], 0.2, 0.8
        elif key == "seg":
            proto, lo, hi = tiny_segmenter(kernel=3), 0.3, 0.7
        else:
            raise KeyError(key)
        m = advonnx.load_model(save(proto, self.folder / f"{key}.onnx"), estimator=EstimatorConfig(samples=10))
        x = rng.uniform(lo, hi, (6,) + tuple(m.spec.input_shape[1:])).astype(np.float32)
        return m, x

    def surrogate(self) -> str:
        path = self.folder / "surrogate.onnx"
        if not path.exists():
            save(small_cnn(seed=7), path)
        return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return _Models(tmp_path_factory.mktemp("contract"))


# -- the checks ----------------------------------------------------------------------------------


def _rejudged(model, x_adv, ref, targeted: bool) -> np.ndarray:
    """The model's own decision on ``x_adv``, judged here (segmentation: half the pixels)."""
    pred = model.classify(x_adv)
    hit = pred == ref if targeted else pred != ref
    return hit if hit.ndim == 1 else hit.reshape(len(hit), -1).mean(axis=1) >= 0.5


def _norm(delta: np.ndarray, norm: str) -> np.ndarray:
    d = delta.reshape(len(delta), -1).astype(np.float64)
    return {"linf": np.abs(d).max(axis=1), "l2": np.linalg.norm(d, axis=1), "l0": (d != 0).sum(axis=1)}[norm]


def _settings(models, case: Case) -> dict[str, Any]:
    return {k: (models.surrogate() if v == SURROGATE else v) for k, v in case.settings.items()}


def _run(models, name: str, case: Case, key: str, xp=None):
    model, x = models(key)
    settings = _settings(models, case)
    target = None
    if case.targeted:
        classes = model.spec.num_classes
        target = (model.classify(x) + 1) % classes
        if xp is not None:
            target = xp.asarray(target)
    xin = x if xp is None else xp.asarray(x)
    return make_attack(name, **settings)(
        model, xin, None, target=target, targeted=case.targeted, rng=Random(1), gradient=case.gradient
    )


def _check_certificate(models, name: str, case: Case, key: str) -> None:
    model, x = models(key)
    atk = make_attack(name, **case.settings)
    with pytest.raises(AdvonnxError, match="certificates, not adversarial examples"):
        atk(model, x)
    if model.spec.task == "segmentation":
        return
    cert = atk.certify(model, x, Random(1))
    assert cert.prediction.shape == (len(x),) and np.all(
        (cert.prediction >= -1) & (cert.prediction < model.spec.num_classes)
    )
    assert np.all(cert.radius >= 0) and np.all(cert.radius[cert.prediction == -1] == 0)
    assert np.all(cert.queries == case.settings["n0"] + case.settings["n"])


def _check(models, name: str, case: Case, key: str):
    if name == "certify":
        return _check_certificate(models, name, case, key)
    model, x = models(key)
    res = _run(models, name, case, key)
    cls = attack_class(name)
    lo, hi = model.spec.value_range
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert res.x_adv.min() >= lo and res.x_adv.max() <= hi, "left the value range"
    norm = res.params.get("norm", "linf")
    size = _norm(res.x_adv - x, norm)
    eps = case.settings.get("eps")
    if eps is not None:
        assert size.max() <= eps * (1 + 1e-5), f"over the {norm} budget {eps}: {size.max()}"
    else:  # a minimal-norm attack without eps reports the norm of the example it returns
        assert cls.minimal_norm, f"{name} needs eps"
        ok = np.asarray(res.success)
        np.testing.assert_allclose(res.min_norm[ok], size[ok], rtol=1e-5, atol=1e-6)
        assert np.all(np.isinf(res.min_norm[~ok]))
    ref = res.target if case.targeted else res.labels
    assert np.array_equal(res.success, _rejudged(model, res.x_adv, ref, case.targeted)), "success not re-judged"
    if cls.needs != "gradient":
        cap = case.settings.get("max_queries")
        if cap is not None:
            assert res.queries.max() <= cap
    assert res.queries.shape == (len(x),) and np.all(res.queries >= 0)
    return res


def _cases():
    for name in sorted(CONTRACT):
        for i, case in enumerate(CONTRACT[name]):
            for key in case.models:
                yield pytest.param(name, i, key, id=f"{name}-{i}-{key}")


_BROKE: dict[tuple[str, int, str], bool] = {}


@pytest.mark.parametrize("name,i,key", list(_cases()))
def test_contract(models, name, i, key):
    case = CONTRACT[name][i]
    res = _check(models, name, case, key)
    if res is None:
        return
    _BROKE[(name, i, key)] = bool(res.success.any())
    if case.breaks and key == case.models[-1]:
        # the attack breaks something on at least one of its models (an identity attack fails)
        broke = [_BROKE.get((name, i, k)) for k in case.models]
        broke = [
            b if b is not None else bool(_run(models, name, case, k).success.any()) for b, k in zip(broke, case.models)
        ]
        assert any(broke), f"{name} broke no sample on {case.models}"


@pytest.mark.parametrize("name,i", [(n, i) for n in sorted(CONTRACT) for i, c in enumerate(CONTRACT[n]) if c.strict])
def test_contract_under_array_api_strict(models, name, i):
    """Same draws, same result on array-api-strict arrays as on NumPy (no NumPy-only calls)."""
    xps = pytest.importorskip("array_api_strict")
    from advonnx.xp import to_numpy

    case = CONTRACT[name][i]
    key = case.models[0]
    ref = _run(models, name, case, key)
    res = _run(models, name, case, key, xp=xps)
    np.testing.assert_allclose(to_numpy(res.x_adv), ref.x_adv, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(to_numpy(res.success), ref.success)
    np.testing.assert_array_equal(res.queries, ref.queries)


def _query_only() -> list[tuple[str, Case]]:
    return [
        (n, c)
        for n in sorted(CONTRACT)
        if attack_class(n).needs != "gradient" and n != "certify"
        for c in CONTRACT[n][:1]
    ]


@pytest.mark.parametrize("name,case", _query_only(), ids=[n for n, _ in _query_only()])
@pytest.mark.parametrize("budget", [1, 7, 40])
def test_query_budget_respected_exactly(models, name, case, budget):
    """The caller's budget is never exceeded, and queries match the model's own counter."""
    model, x = models(case.models[0])
    settings = {k: v for k, v in _settings(models, case).items() if k != "max_queries"}
    before = model.queries
    res = make_attack(name, **settings)(model, x, None, rng=Random(0), max_queries=budget)
    assert res.queries.max() <= budget
    # every model evaluation of the attack is counted on some sample; the rest are the base's own
    # whole-batch checks (clean prediction, success re-query, min-norm judgement)
    overhead = model.queries - before - res.queries.sum()
    assert overhead % len(x) == 0 and 2 * len(x) <= overhead <= 3 * len(x)
