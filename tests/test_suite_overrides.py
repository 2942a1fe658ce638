"""``Suite.with_overrides``: the options of ``advonnx run`` applied to a suite without typer, and
the CLI building its suite through it (the same Suite as the hand-written code it replaced)."""

import dataclasses
from pathlib import Path

import pytest

from advonnx.errors import AdvonnxError
from advonnx.suite import AttackEntry, DatasetEntry, ModelEntry, Suite, load_suite, parse_eps


def _adhoc() -> Suite:
    return Suite(name="adhoc", models=[], datasets=[], attacks=[])


def test_models_and_data_replace_the_suite_and_take_the_model_options():
    s = _adhoc().with_overrides(
        models=["m.onnx", "sub/n.onnx"],
        data="scans/",
        limit=5,
        orientation="RAS",
        spacing="1,1,1",
        value_range="0,255",
        layout="NHWC",
        votes=3,
        class_names="benign, malignant",
        intensity="window:-1000,400",
    )
    assert [(m.name, m.path, m.dataset) for m in s.models] == [("m", "m.onnx", "scans"), ("n", "sub/n.onnx", "scans")]
    assert s.models[0].overrides == {
        "value_range": "0,255",
        "layout": "NHWC",
        "votes": 3,
        "class_names": ["benign", "malignant"],
    }
    assert s.models[0].overrides is not s.models[1].overrides
    (d,) = s.datasets
    assert (d.name, d.path, d.limit, d.orientation, d.spacing, d.intensity) == (
        "scans",
        "scans",
        5,
        "RAS",
        "1,1,1",
        "window:-1000,400",
    )
    # no --attack on a suite without attacks: fgsm and pgd at 2/255 and 8/255; the headline is the last setting
    assert [(a.name, a.norm, [t for _, t in a.eps]) for a in s.attacks] == [
        ("fgsm", "linf", ["2/255", "8/255"]),
        ("pgd", "linf", ["2/255", "8/255"]),
    ]
    assert s.headline == {"attack": "pgd", "norm": "linf", "eps": "8/255"}


def test_attack_specs_win_over_the_global_options():
    s = _adhoc().with_overrides(
        models=["m.onnx"],
        data="d.npz",
        eps="2/255",
        norm="l2",
        steps=9,
        max_queries=50,
        attack=["pgd(norm=l2, eps=[0.25, 0.5], steps=7),fgsm,jsma(norm=l0, eps=[3]),square,certify"],
    )
    got = {a.name: (a.norm, [t for _, t in a.eps], a.settings) for a in s.attacks}
    assert got["pgd"] == ("l2", ["0.25", "0.5"], {"steps": 7})  # the spec's steps beat --steps
    assert got["fgsm"] == ("l2", ["2/255"], {})  # no steps setting: --steps does not apply
    assert got["jsma"][:2] == ("l0", ["3"])
    assert got["square"][2]["max_queries"] == 50 and got["square"][1] == ["2/255"]
    assert got["certify"][0] == "l2"  # --norm l2; an attack of one norm takes it anyway
    assert s.headline == {"attack": "certify", "norm": "l2", "eps": "2/255"}


def test_a_suite_file_keeps_its_attacks_and_gets_eps_norm_steps_and_run_options():
    quick = load_suite("quick")
    s = quick.with_overrides(
        eps="1/255",
        steps=5,
        limit=4,
        seed=3,
        gradient="exact",
        save_examples=2,
        chunk_size=16,
        worst_case=True,
        masking_checks=False,
        transfer_matrix=True,
    )
    assert [a.name for a in s.attacks] == [a.name for a in quick.attacks]
    assert {t for a in s.attacks for _, t in a.eps} == {"1/255"}
    assert [a.settings.get("steps") for a in s.attacks] == [None, 5, 5, None, None]  # only attacks with steps
    assert {d.limit for d in s.datasets} == {4} and s.headline == quick.headline
    assert (s.seed, s.gradient, s.save_examples, s.chunk_size) == (3, "exact", 2, 16)
    assert (s.worst_case, s.masking_checks, s.transfer_matrix) == (True, False, True)
    # a copy: the suite it came from is unchanged
    assert quick == load_suite("quick")
    assert quick.with_overrides() == quick


def test_target_map_and_targeted_respect_an_explicit_untargeted_spec():
    s = _adhoc().with_overrides(
        models=["m.onnx"], data="d.npz", attack=["pgd(targeted=false),fgsm,bim(target_map=0:1)"], target_map="1:2"
    )
    got = {a.name: (a.targeted, a.target_map) for a in s.attacks}
    assert got == {"pgd": (False, ""), "fgsm": (True, "1:2"), "bim": (True, "0:1")}
    s = _adhoc().with_overrides(models=["m.onnx"], data="d.npz", attack=["pgd(targeted=false),fgsm"], targeted=True)
    assert [(a.name, a.targeted, a.target_map) for a in s.attacks] == [("pgd", False, ""), ("fgsm", True, "")]


def test_corruptions_severities_and_joint_inputs():
    quick = load_suite("quick")
    s = quick.with_overrides(corruptions="gaussian_noise,bias_field", severities="2-3")
    assert (s.corruptions, s.severities) == (["gaussian_noise", "bias_field"], [2, 3])
    assert quick.with_overrides(severities="1,5").severities == [1, 5]
    s = _adhoc().with_overrides(
        models=["m.onnx"], data="d.npz", attack_inputs="signal=0.02,features=0.1", attack=["pgd"]
    )
    assert s.models[0].overrides == {"attack_inputs": "signal=0.02,features=0.1"}
    assert [t for _, t in s.attacks[0].eps] == ["0.02"]  # the first input's budget is the eps
    s = _adhoc().with_overrides(models=["m.onnx"], data="d.npz", attack_inputs="signal", eps="0.1")
    assert s.models[0].overrides == {"input_name": "signal"}


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"chunk_size": 0}, "--chunk-size must be >= 1"),
        ({"attack": ["square"], "max_queries": 0}, "--max-queries must be >= 1"),
        ({"models": ["m.onnx"], "data": "d.npz", "severities": "2"}, "--severities needs --corruptions"),
        ({"class_names": "a,a"}, "give each class once"),
        ({"attack_inputs": "a,b", "corruptions": "all"}, "--corruptions change one input"),
        ({"attack_inputs": "a,b", "attack": ["cw"]}, "cw does not attack several inputs jointly"),
        ({"attack_inputs": "a=0.1,b=0.2", "eps": "0.1"}, "drop --eps"),
        ({"intensity": "bogus"}, "intensity rule 'bogus'"),
        ({"target_map": "a-b"}, "write SOURCE:TARGET"),
        ({"attack": ["pgd(steps=-1)"]}, "steps must be >= 1"),
        ({"eps": "abc"}, "eps 'abc' is not a number"),
        ({"costs": "nope.csv"}, "no such cost-matrix file"),
    ],
)
def test_bad_options_fail_in_one_line(kwargs, needle):
    with pytest.raises(AdvonnxError, match=needle):
        (_adhoc() if "models" in kwargs else load_suite("quick")).with_overrides(**kwargs)


def test_the_cli_builds_its_suite_with_with_overrides(monkeypatch, tmp_path):
    """``advonnx run ...`` hands the Runner exactly ``Suite.with_overrides`` of the same options."""
    import advonnx.runner
    from advonnx.cli import app

    class Stop(Exception):
        pass

    seen = {}

    class FakeRunner:
        def __init__(self, suite, **kwargs):
            seen.update(suite=suite, **kwargs)
            raise Stop

    monkeypatch.setattr(advonnx.runner, "Runner", FakeRunner)
    costs = tmp_path / "costs.csv"
    costs.write_text("true,benign,malignant\nbenign,0,1\nmalignant,5,0\n", encoding="utf-8")
    with pytest.raises(Stop):
        app(
            args=[
                "run",
                "--model",
                "m.onnx",
                "--data",
                "d.npz",
                "--attack",
                "pgd(steps=7),square",
                "--eps",
                "4/255",
                "--max-queries",
                "40",
                "--target-map",
                "malignant:benign",
                "--costs",
                str(costs),
                "--limit",
                "3",
                "--no-masking-checks",
                "--seed",
                "2",
                "-q",
                "--device",
                "cpu",
                "--batch-size",
                "8",
            ],
            standalone_mode=False,
        )
    want = _adhoc().with_overrides(
        models=["m.onnx"],
        data="d.npz",
        attack=["pgd(steps=7),square"],
        eps="4/255",
        max_queries=40,
        target_map="malignant:benign",
        costs=costs,
        limit=3,
        masking_checks=False,
        seed=2,
    )
    assert dataclasses.asdict(seen["suite"]) == dataclasses.asdict(want)
    assert (seen["device"], seen["batch_size"], seen["progress"], Path(seen["out"])) == (
        "cpu",
        8,
        None,
        Path("advonnx-results"),
    )
    assert [(a.name, a.targeted, a.target_map, a.settings) for a in want.attacks] == [
        ("pgd", True, "malignant:benign", {"steps": 7}),
        ("square", True, "malignant:benign", {"max_queries": 40}),
    ]


def test_suite_entries_round_trip_through_overrides():
    s = Suite(
        name="t",
        models=[ModelEntry("a", "a.onnx", overrides={"votes": 3})],
        datasets=[DatasetEntry("d", "d.npz")],
        attacks=[AttackEntry("fgsm", eps=parse_eps("0.1"))],
    )
    t = s.with_overrides(layout="NCHW", norm="l2")
    assert t.models[0].overrides == {"votes": 3, "layout": "NCHW"} and s.models[0].overrides == {"votes": 3}
    assert (t.attacks[0].norm, s.attacks[0].norm) == ("l2", "linf")
    assert t.config_hash() != s.config_hash()
