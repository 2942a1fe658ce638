"""--attack "pgd(steps=50, restarts=5),...": the suite TOML's attack keys on the command line."""

import pytest

from advonnx.attack_spec import parse_attack_specs, parse_value, split_top_level
from advonnx.attacks import make_attack
from advonnx.errors import AdvonnxError
from advonnx.suite import _suite_from_dict


@pytest.mark.parametrize(
    "text,value",
    [
        ("50", 50),
        ("-3", -3),
        ("0.5", 0.5),
        ("1e-3", 1e-3),
        ("2/255", 2 / 255),
        ("true", True),
        ("False", False),
        ("none", None),
        ("margin", "margin"),
        ("'a,b'", "a,b"),
        ('"x y"', "x y"),
        ("[1, 2/4, ce]", [1, 0.5, "ce"]),
    ],
)
def test_values_parse_without_eval(text, value):
    got = parse_value(text)
    assert got == value and type(got) is type(value)


def test_eval_is_never_used():
    assert parse_value("__import__('os').getcwd()") == "__import__('os').getcwd()"


def test_split_respects_parentheses_brackets_quotes():
    assert split_top_level("pgd(steps=5, eps=[1/255, 2/255]),square(loss='a,b'), fgsm") == [
        "pgd(steps=5, eps=[1/255, 2/255])",
        "square(loss='a,b')",
        "fgsm",
    ]


# the same attacks written as a suite TOML entry and on the command line
CASES = [
    (
        {"name": "pgd", "steps": 50, "restarts": 5, "eps": ["1/255", "2/255"], "norm": "linf"},
        "pgd(steps=50, restarts=5, eps=[1/255, 2/255], norm=linf)",
    ),
    (
        {"name": "square", "max_queries": 300, "p_init": 0.3, "loss": "ce", "eps": ["0.05"]},
        "square(max_queries=300, p_init=0.3, loss=ce, eps=0.05)",
    ),
    (
        {"name": "cw", "steps": 20, "abort_early": False, "confidence": 1.0, "norm": "l2", "eps": ["0"]},
        "cw(steps=20, abort_early=false, confidence=1, norm=l2, eps=0)",
    ),
    (
        {"name": "dag", "gamma": 2 / 255, "pixels": "correct", "keep_background": True, "eps": ["0"]},
        "dag(gamma=2/255, pixels=correct, keep_background=true, eps=0)",
    ),
    (
        {"name": "hsj", "max_queries": 500, "norm": "linf", "eps": ["0"], "targeted": True},
        "hsj(max_queries=500, norm=linf, eps=0, targeted=true)",
    ),
]


@pytest.mark.parametrize("toml,cli", CASES, ids=[c[0]["name"] for c in CASES])
def test_cli_settings_equal_the_suite_toml(toml, cli):
    raw = {"models": [{"path": "m.onnx"}], "datasets": [{"path": "d.npz"}], "attacks": [dict(toml)]}
    entry = _suite_from_dict(raw, base=__import__("pathlib").Path("."), source="t.toml").attacks[0]
    (spec,) = parse_attack_specs(cli)
    assert spec.settings == entry.settings
    assert [type(v) for v in spec.settings.values()] == [type(v) for v in entry.settings.values()]
    assert spec.eps == entry.eps and (spec.norm or "linf") == entry.norm and bool(spec.targeted) == entry.targeted
    for (eps, _), (eps2, _) in zip(spec.eps, entry.eps):
        a = make_attack(spec.name, norm=entry.norm, eps=eps or 1e-12, **spec.settings)
        b = make_attack(entry.name, norm=entry.norm, eps=eps2 or 1e-12, **entry.settings)
        assert repr(a) == repr(b)


@pytest.mark.parametrize(
    "text,needle",
    [
        (
            "pgd(stepz=3)",
            "pgd has no setting 'stepz'; its settings: norm, eps, steps, step_size, random_start, restarts, loss, targeted, datasets",
        ),
        ("pgd(steps=abc)", "steps takes an integer"),
        ("pgd(steps=2.5)", "steps takes an integer"),
        ("cw(abort_early=1)", "abort_early takes true or false"),
        ("square(p_init=high)", "p_init takes a number"),
        ("pgd(eps=1/255,2/255)", "eps=[1/255, 2/255]"),
        ("pgd(steps", "unclosed"),
        ("pgd(steps=3))", "unbalanced"),
        ("pgd(3)", "is not key=value"),
        ("pgd(eps=big)", "eps 'big' is not a number"),
        ("nosuch(steps=3)", "unknown attack 'nosuch'"),
        ("pgd[steps=3]", "write NAME or NAME(key=value, ...)"),
    ],
)
def test_bad_settings_are_one_line_errors(text, needle):
    with pytest.raises(AdvonnxError) as err:
        parse_attack_specs(text)
    assert needle in str(err.value) and "\n" not in str(err.value)
