"""Property-based tests (hypothesis) of the experiment-file loader and the --set parser: any input
either loads to a valid plan or fails with exit code 2 and ONE line — never a traceback, never a
partial submission."""

from __future__ import annotations

import string
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vitbench.cli import main
from vitbench.errors import UserError
from vitbench.spec.overrides import parse_override

KEYS = ["seed", "model.name", "model.pos_embed", "model.pool", "pretrain.lr", "pretrain.steps", "pretrain.size",
        "eval.fewshot.shots", "runtime.device", "pretrain.augment.crop", "model", "nope", "pretrain.nope.x"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                    st.text(string.printable, max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.sampled_from(KEYS + ["product", "zip", "chain"]),
                                                                       inner, max_size=3)), max_leaves=8)
experiments = st.fixed_dictionaries({}, optional={
    "base": st.one_of(values, st.fixed_dictionaries({}, optional={
        "model": st.dictionaries(st.sampled_from(["name", "pos_embed", "pool", "x"]),
                                 st.sampled_from(["ViT-nano/4", "BiT-nano", "none", "cls", "gap", 3, None]), max_size=3),
        "pretrain": st.dictionaries(st.sampled_from(["steps", "size", "lr", "batch_size"]),
                                    st.one_of(st.integers(-3, 50), st.floats(-1, 1), st.text(max_size=3)), max_size=3)})),
    "grid": values, "seeds": values, "exclude": values, "extends": values,
    "scales": st.one_of(values, st.fixed_dictionaries({"smoke": st.one_of(st.none(), values)})),
    "report": values, "default_scale": st.sampled_from(["smoke", "micro", "huge", 3]),
    "description": values, "bogus": values,
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=experiments)
def test_any_experiment_file_plans_or_fails_cleanly(doc: dict, tmp_path_factory, capsys) -> None:  # noqa: ANN001
    d = tmp_path_factory.mktemp("prop")
    f = d / "exp.yaml"
    f.write_text(yaml.safe_dump(doc))
    results = d / "results"
    code = main(["run", str(f), "--scale", "smoke", "--cluster", "slurm", "--dry-run", "--results", str(results)])
    err = capsys.readouterr().err
    assert code in (0, 2)
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and err.startswith("vitbench: error: "), err
    assert not results.exists()  # a dry run writes nothing, valid or not


@settings(max_examples=300, deadline=None)
@given(text=st.text(string.printable + "é∞", max_size=40))
def test_any_override_parses_or_raises_user_error(text: str) -> None:
    try:
        key, _ = parse_override(text)
    except UserError as exc:
        assert "\n" not in str(exc)
    else:
        assert key in text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), value=st.text(string.printable, max_size=15))
def test_any_set_flag_on_a_real_experiment(key: str, value: str, tmp_path_factory, capsys) -> None:  # noqa: ANN001
    results = tmp_path_factory.mktemp("r") / "results"
    code = main(["run", "ablations/pos_embed.yaml", "--scale", "smoke", "--dry-run", "--results", str(results),
                 "--set", f"{key}={value}"])
    err = capsys.readouterr().err
    assert code in (0, 2)
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err
    assert not Path(results).exists()
