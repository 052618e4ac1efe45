"""Plugins: a file registering each kind (model, position embedding, pooling head, dataset) used like the built-ins;
the plugin's hash in the run id of exactly the runs that use its names; a file changed after planning fails the run
with one line; broken plugins (syntax, a clash with a built-in, bad options) are one line, exit 2, nothing run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vitbench import plugins
from vitbench.errors import UserError
from vitbench.models.published import file_sha256

REPO = Path(__file__).resolve().parents[1]

PLUGIN = '''"""A test plugin: one of each kind."""
import dataclasses

import torch
from torch import nn

from vitbench import plugins
from vitbench.data.digits import Digits


@plugins.pos_embed("zero_1d{tag}")
class ZeroTable(nn.Module):  # absolute: a learned table, placed like learned_1d
    def __init__(self, grid_size, dim, num_prefix_tokens):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(1, num_prefix_tokens + grid_size[0] * grid_size[1], dim))

    def forward(self, x):
        return x + self.pos

    def set_grid_size(self, grid_size):
        raise NotImplementedError


@plugins.pos_embed("swap_qk{tag}", kind="attention")
class SwapQK(nn.Module):  # attention: acts on queries and keys in every block
    def __init__(self, grid_size, head_dim, num_prefix_tokens):
        super().__init__()
        self.calls = 0

    def forward(self, q, k):
        self.calls += 1
        return k, q

    def set_grid_size(self, grid_size):
        pass


@plugins.pool("max_pool{tag}")
class MaxPool(nn.Module):
    def __init__(self, dim):
        super().__init__()

    def forward(self, x):
        return x.max(dim=1).values


class Linear(nn.Module):
    def __init__(self, num_classes, img_size, in_chans, dropout):
        super().__init__()
        self.num_features, self.img_size = 8, img_size
        self.body = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.LazyLinear(8))
        self.head = nn.Linear(8, num_classes)

    def forward_features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.forward_features(x))

    def reset_classifier(self, num_classes):
        self.head = nn.Linear(8, num_classes)

    def set_img_size(self, img_size):
        self.img_size = img_size


def _check(options):
    if options["dropout"] > 0.5:
        raise ValueError("dropout above 0.5 is not allowed here")


@plugins.model("TinyLinear{tag}", options=("dropout",), validate=_check)
def tiny(*, num_classes, img_size, in_chans, dropout):
    return Linear(num_classes, img_size, in_chans, dropout)


@plugins.dataset("digits_copy{tag}")
class DigitsCopy(Digits):
    info = dataclasses.replace(Digits.info, name="digits_copy{tag}")
'''


def _write(path: Path, tag: str, extra: str = "") -> Path:
    path.write_text(PLUGIN.replace("{tag}", tag) + extra)
    return path


def test_a_plugin_registers_each_kind_and_they_work_like_the_built_ins(tmp_path: Path) -> None:
    from vitbench.data import get_dataset
    from vitbench.models import create_model

    f = _write(tmp_path / "p.py", "_a")
    plugin = plugins.load_plugin(f)
    assert plugin.names == [("pos_embed", "zero_1d_a"), ("pos_embed", "swap_qk_a"), ("pool", "max_pool_a"),
                            ("model", "TinyLinear_a"), ("dataset", "digits_copy_a")]
    assert plugins.load_plugin(f) is plugin  # once per file and content
    x = torch.rand(2, 3, 16, 16)
    m = create_model("ViT-nano/4", num_classes=5, img_size=16, pos_embed="zero_1d_a", pos_placement="every_layer",
                     pool="max_pool_a")
    assert len(m.pos_embed) == 2 and m.cls_token is None and m(x).shape == (2, 5)
    rope = create_model("ViT-nano/4", num_classes=5, img_size=16, pos_embed="swap_qk_a")
    rope(x)
    assert rope.pos_attn.calls == 2  # once per block
    with pytest.raises(ValueError, match="only works with pos_placement='stem'"):
        create_model("ViT-nano/4", num_classes=5, img_size=16, pos_embed="swap_qk_a", pos_placement="every_layer")
    assert create_model("TinyLinear_a", num_classes=3, img_size=16, dropout=0.1)(x).shape == (2, 3)
    with pytest.raises(ValueError, match="dropout above 0.5"):
        create_model("TinyLinear_a", num_classes=3, img_size=16, dropout=0.6)
    with pytest.raises(ValueError, match="pool='gap' is not an option of this plugin model"):
        create_model("TinyLinear_a", num_classes=3, img_size=16, pool="gap")
    assert len(get_dataset("digits_copy_a", "test", img_size=16)) == len(get_dataset("digits", "test", img_size=16))


def _run_config(tmp_path: Path, **model: object) -> Path:
    f = tmp_path / "run.yaml"
    f.write_text(json.dumps({
        "model": {"name": "ViT-nano/4", **model}, "pretrain": {"size": 256, "steps": 4, "batch_size": 32,
                                                             "warmup_steps": 1},
        "eval": {"fewshot": {"datasets": ["digits"], "shots": [1], "seeds": 1},
                 "finetune": {"dataset": None}},
        "runtime": {"device": "cpu", "threads": 1, "log_every": 2, "checkpoint_every": 2}}))
    return f


def test_a_run_records_the_plugin_and_a_file_changed_after_planning_fails_it_with_one_line(tmp_path: Path) -> None:
    from vitbench.record.rundir import RunDir
    from vitbench.spec.runconfig import load_run_config
    from vitbench.train.run import Run

    f = _write(tmp_path / "p.py", "_b")
    plugins.load_plugin(f)
    cfg = load_run_config(_run_config(tmp_path, pos_embed="zero_1d_b", pool="max_pool_b"))
    assert cfg["plugins"] == [{"file": str(f.resolve()), "sha256": file_sha256(f)}]
    rec = Run(cfg, RunDir(tmp_path / "ok")).execute()
    assert rec is not None and rec["status"] == "done" and rec["plugins"] == cfg["plugins"]
    assert load_run_config(_run_config(tmp_path))["plugins"] == []  # names of no plugin: no plugin in the run
    _write(f, "_b", "# edited\n")
    rd = RunDir(tmp_path / "changed")
    with pytest.raises(UserError) as exc:
        Run(cfg, rd).execute()
    assert str(exc.value).startswith(f"plugins: {f.resolve()} changed after the run was planned (sha256 ")
    assert json.loads(rd.file("error.json").read_text())["reason"] == str(exc.value)


def _ids(tmp_path: Path, plugin: Path) -> dict[str, str]:
    """run id per pos_embed of a two-run grid, planned in a fresh process (a process loads a plugin once)."""
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"extends: {REPO / 'experiments' / '_scales.yaml'}\nplugins: [{plugin.name}]\n"
                   "grid: {model.pos_embed: [learned_1d, zero_1d_c]}\n")
    proc = subprocess.run([sys.executable, "-m", "vitbench.cli", "run", str(exp), "--scale", "smoke", "--dry-run",
                           "--json"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return {r["config"]["model"]["pos_embed"]: r["run_id"] for r in json.loads(proc.stdout)}


def test_the_run_id_holds_the_plugins_bytes_for_the_runs_that_use_it_only(tmp_path: Path) -> None:
    f = _write(tmp_path / "p.py", "_c")
    before = _ids(tmp_path, f)
    assert _ids(tmp_path, f) == before  # same bytes, same ids
    _write(f, "_c", "# a comment is other bytes\n")
    after = _ids(tmp_path, f)
    assert after["learned_1d"] == before["learned_1d"] and after["zero_1d_c"] != before["zero_1d_c"]


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VITBENCH_RESULTS": str(tmp_path / "results")}
    return subprocess.run([sys.executable, "-m", "vitbench.cli", *args], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=env)


LAST = PLUGIN.count("\n") + 1  # the line a test appends to the plugin


@pytest.mark.parametrize("tag,extra,want", [
    ("_d", "def broken(:\n", f"cannot be loaded: SyntaxError: invalid syntax (line {LAST})"),
    ("_e", "plugins.pool('gap')(MaxPool)\n", "pool 'gap' is a built-in name; choose another"),
])
def test_a_broken_plugin_is_one_line_exit_2_and_nothing_is_submitted(tmp_path: Path, tag: str, extra: str,
                                                                      want: str) -> None:
    f = _write(tmp_path / "bad.py", tag, extra)
    proc = _cli(tmp_path, "run", str(REPO / "ablations" / "pos_embed.yaml"), "--scale", "smoke", "--plugin", str(f),
                "--cluster", "local")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"vitbench: error: {f.resolve()}: {want}"]
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("tag,extra,want", [
    ("_f", "plugins.model('ViT-B/99')(tiny)\n",
     "plugins.model('ViT-B/99'): 'ViT-B/99' is a name of the vit family (ViT-{Ti,S,B,L,H,micro,nano}/<patch>); "
     "choose another"),
    ("_g", "plugins.model('Wide', options=('width',))(tiny)\n", "plugins.model('Wide'): unknown option 'width'; "
     "allowed: pos_embed, pos_placement, pool, pre_logits, dropout, drop_path"),
    ("_h", "plugins.pos_embed('odd', kind='bias')(SwapQK)\n", "plugins.pos_embed('odd'): kind='bias'; allowed: "
     "absolute, attention"),
    ("_i", "raise RuntimeError('no GPU here')\n", f"cannot be loaded: RuntimeError: no GPU here (line {LAST})"),
    ("_k", "plugins.pos_embed('zero_1d_k')(ZeroTable)\n", "pos_embed 'zero_1d_k' is already registered by {file}"),
])
def test_a_plugin_that_fails_is_one_line_and_leaves_nothing_registered(tmp_path: Path, tag: str, extra: str,
                                                                       want: str) -> None:
    from vitbench.models import pos_embed, vit

    f = _write(tmp_path / "bad.py", tag, extra)
    with pytest.raises(UserError) as exc:
        plugins.load_plugin(f)
    assert str(exc.value) == f"{f.resolve()}: {want.replace('{file}', str(f.resolve()))}"
    assert f"zero_1d{tag}" not in pos_embed.PLUGIN_POS and f"max_pool{tag}" not in vit.PLUGIN_POOLS
    assert ("dataset", f"digits_copy{tag}") not in plugins._OWNERS


def test_plugin_names_reach_grids_and_an_unknown_name_still_lists_them(tmp_path: Path) -> None:
    f = _write(tmp_path / "p.py", "_j")
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"extends: {REPO / 'experiments' / '_scales.yaml'}\nplugins: [p.py]\n"
                   "grid: {model.pos_embed: [zero_1d_j, nope]}\n")
    proc = _cli(tmp_path, "run", str(exp), "--dry-run")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"vitbench: error: {exp}: grid.model.pos_embed[1]: 'nope' is not allowed; choose one "
                                   "of none, learned_1d, learned_2d, relative, sincos_2d, zero_1d_j, swap_qk_j")
    missing = _cli(tmp_path, "table", str(exp), "--plugin", str(tmp_path / "absent.py"))
    assert missing.returncode == 2 and missing.stderr.strip() == (
        f"vitbench: error: --plugin: no plugin file at {tmp_path / 'absent.py'}")
    assert f.exists()


def test_registering_outside_a_plugin_file_is_refused() -> None:
    with pytest.raises(UserError, match="outside a plugin file"):
        plugins.pool("loose")(object)


def test_the_readme_example_is_a_working_plugin(tmp_path: Path) -> None:
    from vitbench.models import create_model

    text = (REPO / "README.md").read_text()
    code = text.split("```python\n# attn_pool.py")[1].split("```")[0]
    assert len(code.strip().splitlines()) <= 20  # the README promises a complete example of at most 20 lines
    f = tmp_path / "attn_pool.py"
    f.write_text("# attn_pool.py" + code.replace('"attn_pool"', '"attn_pool_t"'))
    assert plugins.load_plugin(f).names == [("pool", "attn_pool_t")]
    m = create_model("ViT-nano/4", num_classes=3, img_size=16, pool="attn_pool_t")
    assert m.cls_token is None and m(torch.rand(2, 3, 16, 16)).shape == (2, 3)
