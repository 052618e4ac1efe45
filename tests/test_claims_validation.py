"""``report.claims`` validation: every error message in full (file, key, text) and the "not applicable" reasons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vitbench.aggregate.claims import check_claims
from vitbench.cli import main
from vitbench.errors import UserError
from vitbench.plan.planner import make_plan

from test_claims import M
from test_claims_rules import _claim
from test_claims_rules import _experiment as _file
GREATER = {"kind": "greater", "subject": {"model.pool": "gap", "pretrain.lr": 1.0e-3},
           "reference": {"model.pool": "cls", "pretrain.lr": 1.0e-3}}
PAIR = {"subject": {"model.pool": "gap"}, "reference": {"model.pool": "cls"}}
ALL_KEYS = "id, claim, kind, metric, scales, subject, reference, among, key, along, delta"
KINDS = "greater, less_than_each, within_each, tuned_lower, tuned_within, positive_then_shrinks"
SCALES = "paper, small, micro, smoke"
RECORDED = ("fewshot/digits/10shot, fewshot/digits/10shot/dev, fewshot/digits/1shot, fewshot/digits/1shot/dev, "
            "fewshot/digits/25shot, fewshot/digits/25shot/dev, fewshot/digits/5shot, fewshot/digits/5shot/dev, "
            "finetune/digits/top1, finetune/digits/top1/dev, pretrain/top1")


def _check(path: Path):  # noqa: ANN202
    return check_claims(make_plan(path, scale="micro", check_data=False))


def _error(tmp: Path, claims: Any, **kw: Any) -> str:
    path = _file(tmp, claims, **kw)
    with pytest.raises(UserError) as e:
        _check(path)
    text = str(e.value)
    prefix = f"{path}: "
    assert text.startswith(prefix), text
    return text[len(prefix):]


CASES = [
    ("not-a-list", "x",
     "report.claims: must be a list of claims ({id, claim, kind, metric, ...})"),
    ("not-a-mapping", [5],
     f"report.claims[0]: must be a mapping of {ALL_KEYS}"),
    ("unknown-key", [_claim(**GREATER, bogus=1)],
     f"report.claims[0].bogus: unknown key; allowed: {ALL_KEYS}"),
    ("missing-kind", [{"id": "c", "claim": "x", "metric": M}],
     "report.claims[0].kind: is required (every claim has id, claim, kind, metric)"),
    ("missing-id", [{"claim": "x", "kind": "greater", "metric": M, **PAIR}],
     "report.claims[0].id: is required (every claim has id, claim, kind, metric)"),
    ("kind-not-a-string", [_claim(kind=5)],
     "report.claims[0].kind: must be a non-empty string"),
    ("blank-id", [_claim(**{**GREATER, "id": "  "})],
     "report.claims[0].id: must be a non-empty string"),
    ("id-not-a-string", [_claim(**{**GREATER, "id": 7})],
     "report.claims[0].id: must be a non-empty string"),
    ("duplicate-id", [_claim(**GREATER), _claim(**GREATER)],
     "report.claims[1].id: duplicate id 'c'; ids are unique within the file"),
    ("unknown-kind", [_claim(kind="bigger")],
     f"report.claims[0].kind: unknown kind 'bigger'; allowed: {KINDS}"),
    ("required-by-kind", [_claim(kind="tuned_within", **PAIR, key="pretrain.lr")],
     "report.claims[0].delta: is required by kind tuned_within (it takes: subject, reference, key, delta)"),
    ("not-used-by-kind", [_claim(**GREATER, along="pretrain.lr")],
     "report.claims[0].along: is not used by kind greater; it takes: subject, reference"),
    ("not-used-optional", [_claim(kind="less_than_each", subject={"model.pool": "gap"}, delta=0.1)],
     "report.claims[0].delta: is not used by kind less_than_each; it takes: subject, reference"),
    ("unknown-placeholder", [_claim(**{**GREATER, "metric": "fewshot/{nope}/5shot"})],
     "report.claims[0].metric: unknown placeholder; allowed: {fewshot_dataset}, {finetune_dataset}"),
    ("unrecorded-metric", [_claim(**{**GREATER, "metric": "nope"})],
     f"report.claims[0].metric: 'nope' is recorded by no run of this plan at this scale; recorded: {RECORDED}"),
    ("record-column-is-no-metric", [_claim(**{**GREATER, "metric": "params"})],
     f"report.claims[0].metric: 'params' is recorded by no run of this plan at this scale; recorded: {RECORDED}"),
    ("delta-bool", [_claim(kind="within_each", among={"model.pool": "gap"}, delta=True)],
     "report.claims[0].delta: must be a positive number (the equivalence margin ±delta)"),
    ("delta-zero", [_claim(kind="within_each", among={"model.pool": "gap"}, delta=0)],
     "report.claims[0].delta: must be a positive number (the equivalence margin ±delta)"),
    ("delta-negative", [_claim(kind="within_each", among={"model.pool": "gap"}, delta=-0.5)],
     "report.claims[0].delta: must be a positive number (the equivalence margin ±delta)"),
    ("delta-string", [_claim(kind="within_each", among={"model.pool": "gap"}, delta="1")],
     "report.claims[0].delta: must be a positive number (the equivalence margin ±delta)"),
    ("scales-empty", [_claim(**GREATER, scales=[])],
     f"report.claims[0].scales: must be a non-empty list of scales; allowed: {SCALES}"),
    ("scales-unknown", [_claim(**GREATER, scales=["micro", "huge"])],
     f"report.claims[0].scales: must be a non-empty list of scales; allowed: {SCALES}"),
    ("scales-not-a-list", [_claim(**GREATER, scales=5)],
     f"report.claims[0].scales: must be a non-empty list of scales; allowed: {SCALES}"),
    ("scales-a-string", [_claim(**GREATER, scales="micro")],
     f"report.claims[0].scales: must be a non-empty list of scales; allowed: {SCALES}"),
    ("subject-empty", [_claim(kind="greater", subject={}, reference={"model.pool": "cls"})],
     "report.claims[0].subject: must be a non-empty mapping {run-config key: value or [values]}"),
    ("subject-a-string", [_claim(kind="greater", subject="gap", reference={"model.pool": "cls"})],
     "report.claims[0].subject: must be a non-empty mapping {run-config key: value or [values]}"),
    ("reference-empty", [_claim(kind="greater", subject={"model.pool": "gap"}, reference={})],
     "report.claims[0].reference: must be a non-empty mapping {run-config key: value or [values]}"),
    ("among-empty-without-subject", [_claim(kind="within_each", among={}, delta=0.1)],
     "report.claims[0].among: must be a non-empty mapping {run-config key: value or [values]}"),
    ("among-bad-key-without-subject", [_claim(kind="within_each", among={"model.poool": "gap"}, delta=0.1)],
     "report.claims[0].among.model.poool: 'model.poool' is not a run-config key"),
    ("selector-value-empty-list", [_claim(kind="greater", subject={"model.pool": []}, reference={"model.pool": "cls"})],
     "report.claims[0].subject.model.pool: must be a value or a non-empty list of values"),
    ("selector-value-mapping", [_claim(kind="greater", subject={"model.pool": {"a": 1}},
                                       reference={"model.pool": "cls"})],
     "report.claims[0].subject.model.pool: must be a value or a non-empty list of values"),
    ("selector-value-nested-list", [_claim(kind="greater", subject={"model.pool": ["gap", ["cls"]]},
                                           reference={"model.pool": "cls"})],
     "report.claims[0].subject.model.pool: must be a value or a non-empty list of values"),
    ("selector-key-a-section", [_claim(kind="greater", subject={"model": "gap"}, reference={"model.pool": "cls"})],
     "report.claims[0].subject.model: 'model' is a section, not a run-config key"),
    ("key-not-a-string", [_claim(kind="tuned_lower", **PAIR, key=5)],
     "report.claims[0].key: must be a dotted run-config key"),
    ("along-not-a-string", [_claim(kind="positive_then_shrinks", **PAIR, along=5)],
     "report.claims[0].along: must be a dotted run-config key"),
    ("key-unknown", [_claim(kind="tuned_lower", **PAIR, key="pretrain.lrr")],
     "report.claims[0].key: 'pretrain.lrr' is not a run-config key"),
    ("along-unknown", [_claim(kind="positive_then_shrinks", **PAIR, along="pretrain.lrr")],
     "report.claims[0].along: 'pretrain.lrr' is not a run-config key"),
    ("along-a-section", [_claim(kind="positive_then_shrinks", **PAIR, along="pretrain")],
     "report.claims[0].along: 'pretrain' is a section, not a run-config key"),
    ("after-a-not-applicable-claim", [_claim(**GREATER, scales=["paper"]), _claim(**{**GREATER, "id": "d"}, bogus=1)],
     f"report.claims[1].bogus: unknown key; allowed: {ALL_KEYS}"),
    ("after-a-not-varying-claim", [_claim(kind="greater", subject={"model.name": "ViT-micro/4"},
                                          reference={"model.name": "ViT-micro/4"}),
                                   _claim(**{**GREATER, "id": "d"}, scales=[])],
     f"report.claims[1].scales: must be a non-empty list of scales; allowed: {SCALES}"),
]


@pytest.mark.parametrize("claims, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_claims_error_message(tmp_path: Path, claims: Any, message: str) -> None:
    assert _error(tmp_path, claims) == message


def test_claims_error_through_the_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _file(tmp_path, [_claim(**GREATER), _claim(**GREATER)])
    assert main(["claims", str(path), "--scale", "micro", "--results", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == (f"vitbench: error: {path}: report.claims[1].id: duplicate id 'c'; "
                                       "ids are unique within the file\n")


def test_claims_list_error_through_the_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _file(tmp_path, {"id": "c"})
    assert main(["claims", str(path), "--scale", "micro", "--results", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == (f"vitbench: error: {path}: report.claims: must be a list of claims "
                                       "({id, claim, kind, metric, ...})\n")


def test_no_claims_is_an_empty_list(tmp_path: Path) -> None:
    assert _check(_file(tmp_path, None)) == []


def test_valid_claims_keep_their_index_and_metric(tmp_path: Path) -> None:
    claims = _check(_file(tmp_path, [_claim(**GREATER), _claim(**{**GREATER, "id": "d",
                                                                   "metric": "fewshot/{fewshot_dataset}/1shot"})]))
    assert [(c.index, c.id, c.metric, c.applicable, c.why_not) for c in claims] == [
        (0, "c", M, True, ""), (1, "d", "fewshot/digits/1shot", True, "")]
    assert claims[0].subject == [3] and claims[0].reference == [0]


def test_a_plan_of_one_run(tmp_path: Path) -> None:
    claims = _check(_file(tmp_path, [_claim(kind="within_each", among={"model.pool": ["cls", "gap"]}, delta=0.1)],
                          grid=None, seeds=[0]))
    assert [(c.index, c.applicable, c.why_not) for c in claims] == [(0, False, "model.pool does not vary at scale micro")]


def test_not_applicable_reasons(tmp_path: Path) -> None:
    claims = _check(_file(tmp_path, [
        _claim(**GREATER, scales=["paper", "small"]),
        _claim(**{"id": "b", "kind": "greater", "subject": {"model.name": "ViT-micro/4"},
                  "reference": {"model.name": "ViT-micro/4"}}),
        _claim(**{"id": "d", "kind": "greater", "subject": {"model.name": "ViT-micro/4", "pretrain.batch_size": 1},
                  "reference": {"model.name": "ViT-micro/4", "model.pool": "cls"}}),
        _claim(**{"id": "e", "kind": "tuned_lower", **PAIR, "key": "eval.finetune.steps"}),
        _claim(**{**GREATER, "id": "f"}),
    ]))
    assert [(c.index, c.id, c.applicable, c.why_not) for c in claims] == [
        (0, "c", False, "the claim is about scales: paper, small"),
        (1, "b", False, "model.name does not vary at scale micro"),
        (2, "d", False, "model.name, pretrain.batch_size do not vary at scale micro"),
        (3, "e", False, "eval.finetune.steps does not vary at scale micro"),
        (4, "f", True, ""),
    ]
