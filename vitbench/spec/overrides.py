"""``--set key.path=value`` overrides, checked against the run-config schema."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from vitbench.errors import UserError
from vitbench.spec import yamlio
from vitbench.spec.schema import allowed_keys, check_value, schema_node, set_path


def parse_override(text: str, *, file: str | None = None) -> tuple[str, Any]:
    """'pretrain.lr=3e-4' -> ('pretrain.lr', 0.0003); the value is read as a YAML scalar/list."""
    where = {"file": file, "key": None if file == "--set" else "--set"}  # name --set once, not twice
    if "=" not in text:
        raise UserError(f"expects key.path=value, got {text!r:.80}", **where)
    key, _, raw = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise UserError(f"empty key path in {text!r:.80}", **where)
    node = schema_node(key)
    if node is None or isinstance(node, dict):
        # name the deepest valid prefix and what it allows
        prefix = ""
        for part in parts:
            nxt = f"{prefix}.{part}" if prefix else part
            if not isinstance(schema_node(nxt), dict):
                break
            prefix = nxt
        what = "a section, set one of its keys" if isinstance(node, dict) else "unknown key"
        raise UserError(f"{what}; allowed: {', '.join(allowed_keys(prefix))}", file=file, key=key)
    try:
        value = yamlio.loads(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise UserError(f"cannot read value {raw!r:.60}", file=file, key=key) from None
    return key, check_value(node, value, file=file, key=key)


def apply_overrides(cfg: dict[str, Any], overrides: list[str], *, file: str | None = None) -> dict[str, Any]:
    """A copy of ``cfg`` with every override set (later ones win)."""
    out = copy.deepcopy(cfg)
    for text in overrides:
        key, value = parse_override(text, file=file)
        set_path(out, key, value)
    return out
