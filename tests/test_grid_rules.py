"""grid rules: each test kills mutants of vitbench/spec/grid.py that the older tests let live (tools/mutation.sh)."""

from __future__ import annotations

import pytest

from vitbench.errors import UserError
from vitbench.spec.grid import MAX_POINTS, count, excluded, expand, parse_excludes
from vitbench.spec.schema import allowed_keys, default_config

TOP = "eval, model, plugins, pretrain, runtime, seed, product, zip, chain"
AUGMENT = "crop, cutmix, flip, mixup, randaugment"


def _message(grid: object, **kw: object) -> str:
    """The whole one-line message expand refuses a grid with."""
    with pytest.raises(UserError) as info:
        expand(grid, **kw)  # type: ignore[arg-type]
    text = str(info.value)
    assert "\n" not in text
    return text


def _exclude_message(spec: object, **kw: object) -> str:
    with pytest.raises(UserError) as info:
        parse_excludes(spec, **kw)  # type: ignore[arg-type]
    return str(info.value)


# --- unknown keys: the allowed list names the right level ------------------------------------
def test_allowed_top_level_is_what_the_message_lists() -> None:
    assert ", ".join(allowed_keys("")) + ", product, zip, chain" == TOP


@pytest.mark.parametrize("key,allowed", [
    ("nope", TOP),                                    # unknown top-level key: top level plus the operators
    ("pretrain", TOP),                                # a section is no axis: still the top level
    ("model", TOP),
    ("nope.x", TOP),                                  # unknown section: the top level
    ("model.name.x", TOP),                            # a leaf is no section: the top level
    ("model.nope", "drop_path, dropout, init, init_sha256, name, pool, pos_embed, pos_placement, pre_logits"),
    ("pretrain.augment.nope", AUGMENT),               # three levels: the innermost known section
    ("eval.fewshot.nope", "datasets, every, img_size, l2, probe_size, seeds, shots"),
    ("eval.finetune.augment.nope", AUGMENT),
    ("pretrain.augment", ", ".join(allowed_keys("pretrain"))),  # a nested section: its parent's keys
])
def test_unknown_grid_key_lists_its_level(key: str, allowed: str) -> None:
    assert _message({key: [1]}, file="f.yaml") == f"f.yaml: grid.{key}: unknown grid key {key!r}; allowed: {allowed}"


def test_seed_is_an_axis() -> None:
    assert expand({"seed": [3, 1]}) == [{"seed": 3}, {"seed": 1}]
    assert parse_excludes([{"seed": 2}]) == [{"seed": [2]}]


# --- list-valued keys ------------------------------------------------------------------------
@pytest.mark.parametrize("values", [5, [], [1, 5], [[1], 5], "1"])
def test_list_valued_key_needs_a_list_of_lists(values: object) -> None:
    assert _message({"eval.fewshot.shots": values}, file="f.yaml") == (
        "f.yaml: grid.eval.fewshot.shots: a list-valued key takes a list of lists as grid axis")


def test_list_valued_key_error_without_a_file_names_the_key() -> None:
    assert _message({"zip": {"eval.fewshot.shots": [3]}}) == (
        "grid.zip.eval.fewshot.shots: a list-valued key takes a list of lists as grid axis")


# --- scalars and single values -----------------------------------------------------------------
def test_scalar_is_a_one_value_axis() -> None:
    assert expand({"seed": 3}) == [{"seed": 3}]
    assert expand({"seed": 3, "model.pool": ["cls", "gap"]}) == [{"seed": 3, "model.pool": "cls"},
                                                                 {"seed": 3, "model.pool": "gap"}]
    assert expand({"product": {"pretrain.lr": 0.5}}) == [{"pretrain.lr": 0.5}]


def test_empty_value_list_message() -> None:
    assert _message({"pretrain.lr": []}, file="f.yaml") == (
        "f.yaml: grid.pretrain.lr: empty value list: the grid would have no runs")


def test_product_order_is_row_major() -> None:
    assert expand({"seed": [1, 2], "model.pool": ["cls", "gap"]}) == [
        {"seed": 1, "model.pool": "cls"}, {"seed": 1, "model.pool": "gap"},
        {"seed": 2, "model.pool": "cls"}, {"seed": 2, "model.pool": "gap"}]
    assert expand({"chain": [{"seed": [2]}, {"seed": [1]}]}) == [{"seed": 2}, {"seed": 1}]


# --- counting and the limit --------------------------------------------------------------------
ONE_VALUE_AXES = ["seed", "model.name", "model.pos_embed", "model.pos_placement", "model.pool", "model.pre_logits",
                  "model.dropout", "model.drop_path", "pretrain.dataset", "pretrain.size", "pretrain.img_size",
                  "pretrain.steps", "pretrain.batch_size", "pretrain.optimizer", "pretrain.lr", "pretrain.b1",
                  "pretrain.b2", "pretrain.weight_decay"]


def test_single_value_axes_count_one() -> None:
    cfg = default_config()
    spec = {k: [cfg[k]] if "." not in k else [cfg[k.split(".")[0]][k.split(".")[1]]] for k in ONE_VALUE_AXES}
    spec["pretrain.size"] = [None]
    assert count(spec) == 1
    # 18 one-value axes are one point, far under the limit (2**18 would not be)
    pts = expand(spec)
    assert len(pts) == 1 and pts[0]["model.name"] == "ViT-micro/4" and pts[0]["pretrain.size"] is None
    assert count({"seed": [1], "pretrain.lr": [0.1, 0.2]}) == 2
    assert count({"seed": []}) == 1  # an empty axis counts 1 (expand then refuses it)


@pytest.mark.parametrize("spec,n", [
    ({"chain": 5}, 1), ({"chain": []}, 1), ({"product": {}}, 1), ({"zip": {}}, 1), ({"zip": "x"}, 1),
    ({"product": [{"seed": [1]}], "seed": [2]}, 1), ({"chain": [{"seed": [1, 2]}, {"zip": 3}]}, 3),
    ({"zip": [{"seed": [1, 2, 3]}, {"seed": [1]}]}, 3), ({"product": {"seed": [1, 2], "model.pool": ["cls"]}}, 2),
])
def test_count_of_malformed_grids(spec: object, n: int) -> None:
    assert count(spec) == n


BIG = {"seed": list(range(MAX_POINTS))}  # exactly the limit: counted, never expanded below


@pytest.mark.parametrize("bad,message", [
    ({"chain": 5}, "grid.product[0].chain: 'chain' takes a non-empty list of grids"),
    ({"chain": []}, "grid.product[0].chain: 'chain' takes a non-empty list of grids"),
    ({"product": {}}, "grid.product[0].product: 'product' of no axes: the grid would have no runs"),
    ({"product": [{"seed": [1]}], "seed": [2]},
     "grid.product[0]: 'product' must be the only key of its mapping; nest other axes inside it"),
])
def test_malformed_part_is_reported_not_the_limit(bad: object, message: str) -> None:
    # A malformed part counts 1: next to a part at the limit the grid is not over it, and the real problem shows.
    assert _message({"product": [bad, BIG]}, file="f.yaml") == "f.yaml: " + message


def test_limit_is_inclusive() -> None:
    pts = expand({"product": [{"seed": list(range(1000))}, {"pretrain.steps": list(range(100))}]})
    assert len(pts) == MAX_POINTS
    assert pts[0] == {"seed": 0, "pretrain.steps": 0} and pts[-1] == {"seed": 999, "pretrain.steps": 99}


def test_limit_message_names_file_and_key() -> None:
    spec = {"seed": list(range(MAX_POINTS + 1))}
    assert _message(spec, file="f.yaml") == (
        "f.yaml: grid: grid expands to 100001 points, more than the limit of 100000")
    assert _message(spec, file="f.yaml", where="scales.smoke.grid") == (
        "f.yaml: scales.smoke.grid: grid expands to 100001 points, more than the limit of 100000")


# --- where an error is: the file and the key path reach every nested check -----------------
@pytest.mark.parametrize("spec,message", [
    ({"seed": ["x"]}, "sweep.seed[0]: must be int, got str 'x'"),
    ({"zip": {"seed": [1, "x"]}}, "sweep.zip.seed[1]: must be int, got str 'x'"),
    ({"product": {"seed": [1], "pretrain.steps": [2, "x"]}},
     "sweep.product.pretrain.steps[1]: must be int or null, got str 'x'"),
    ({"chain": [{"seed": [1]}, {"seed": ["x"]}]}, "sweep.chain[1].seed[0]: must be int, got str 'x'"),
    ({"product": [{"seed": [1]}, {"zip": {"seed": [True]}}]},
     "sweep.product[1].zip.seed[0]: must be int, got bool True"),
    ({"chain": [{"seed": [1]}, {"zip": [{"seed": [1, 2]}, {"pretrain.steps": [1]}]}]},
     "sweep.chain[1].zip: zip needs equal lengths, got [1, 2]"),
    ({"zip": [{"seed": [1, 2]}, {"pretrain.steps": [1]}]}, "sweep.zip: zip needs equal lengths, got [1, 2]"),
    ({"zip": {"seed": [1, 2, 3], "pretrain.steps": [1]}}, "sweep.zip: zip needs equal lengths, got [1, 3]"),
    ({"product": {}}, "sweep.product: 'product' of no axes: the grid would have no runs"),
    ({"zip": {}}, "sweep.zip: 'zip' of no axes: the grid would have no runs"),
    ({"chain": {}}, "sweep.chain: 'chain' takes a non-empty list of grids"),
    ({"chain": [{"zip": {}}]}, "sweep.chain[0].zip: 'zip' of no axes: the grid would have no runs"),
    ({"product": [{"nope": [1]}]}, f"sweep.product[0].nope: unknown grid key 'nope'; allowed: {TOP}"),
    ({"zip": {"nope": [1]}}, f"sweep.zip.nope: unknown grid key 'nope'; allowed: {TOP}"),
    ({"chain": [{"seed": [1]}, [1]]}, "sweep.chain[1]: a grid is a mapping (axes or product/zip/chain), got list"),
    ({"seed": [1], "zip": {"seed": [2]}},
     "sweep: 'zip' must be the only key of its mapping; nest other axes inside it"),
])
def test_nested_errors_name_file_and_path(spec: object, message: str) -> None:
    assert _message(spec, file="f.yaml", where="sweep") == "f.yaml: " + message
    assert _message(spec, where="sweep") == message


@pytest.mark.parametrize("spec,kind", [([1, 2], "list"), ("x", "str"), (3, "int"), (1.5, "float")])
def test_non_mapping_grid_names_its_type(spec: object, kind: str) -> None:
    assert _message(spec, file="f.yaml") == f"f.yaml: grid: a grid is a mapping (axes or product/zip/chain), got {kind}"


def test_default_where_is_grid() -> None:
    assert _message({"seed": ["x"]}) == "grid.seed[0]: must be int, got str 'x'"


# --- excludes --------------------------------------------------------------------------------
def test_exclude_must_be_a_list() -> None:
    assert _exclude_message({"seed": 1}) == "exclude: exclude is a list of partial grid points"
    assert _exclude_message(5, file="f.yaml", where="scales.smoke.exclude") == (
        "f.yaml: scales.smoke.exclude: exclude is a list of partial grid points")
    assert parse_excludes(None) == []


@pytest.mark.parametrize("entry", [{}, 5, "seed", None, [], [{"seed": 1}]])
def test_exclude_entry_is_a_non_empty_mapping(entry: object) -> None:
    msg = "each exclude entry is a non-empty mapping of key: value"
    assert _exclude_message([{"seed": 1}, entry], file="f.yaml") == f"f.yaml: exclude[1]: {msg}"
    assert _exclude_message([entry]) == f"exclude[0]: {msg}"
    assert _exclude_message([entry], where="ex") == f"ex[0]: {msg}"


def test_exclude_errors_name_file_and_path() -> None:
    assert _exclude_message([{"seed": 1}, {"nope": 1}], file="f.yaml") == (
        f"f.yaml: exclude[1].nope: unknown grid key 'nope'; allowed: {TOP}")
    assert _exclude_message([{"pretrain.augment.nope": 1}], file="f.yaml", where="ex") == (
        f"f.yaml: ex[0].pretrain.augment.nope: unknown grid key 'pretrain.augment.nope'; allowed: {AUGMENT}")
    assert _exclude_message([{"seed": "x"}], file="f.yaml") == "f.yaml: exclude[0].seed: must be int, got str 'x'"
    assert _exclude_message([{"seed": [1, "x"]}], file="f.yaml", where="ex") == (
        "f.yaml: ex[0].seed: must be int, got str 'x'")
    assert _exclude_message([{"eval.fewshot.shots": [1, 0]}]) == "exclude[0].eval.fewshot.shots: must be >= 1, got 0"


def test_exclude_values_are_normalised() -> None:
    assert parse_excludes([{"pretrain.lr": [1, 0.5], "model.pool": "gap"}, {"eval.fewshot.shots": [1, 5]}]) == [
        {"pretrain.lr": [1.0, 0.5], "model.pool": ["gap"]}, {"eval.fewshot.shots": [[1, 5]]}]


def test_excluded_reads_the_resolved_config_for_keys_the_grid_does_not_vary() -> None:
    cfg = default_config()
    ex = parse_excludes([{"model.name": "ViT-micro/4", "model.pool": "gap"}])
    assert excluded({"model.pool": "gap"}, cfg, ex) is True         # model.name from the resolved config
    assert excluded({"model.pool": "cls"}, cfg, ex) is False
    assert excluded({"model.pool": "gap", "model.name": "BiT-micro"}, cfg, ex) is False  # the point wins
    assert excluded({}, cfg, parse_excludes([{"pretrain.augment.crop": ["none", "pad_crop"]}])) is True
    assert excluded({}, cfg, parse_excludes([{"pretrain.augment.crop": "pad_crop"}])) is False
    assert excluded({}, cfg, parse_excludes([{"seed": 0}])) is True
    assert excluded({}, cfg, parse_excludes([{"seed": 1}])) is False
    assert excluded({"seed": 1}, cfg, parse_excludes([{"seed": 2}, {"seed": [0, 1]}])) is True
    assert excluded({"seed": 1}, cfg, []) is False
