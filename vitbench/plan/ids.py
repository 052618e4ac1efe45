"""Run ids: a stable hash of the resolved run config.

The id ignores key order (canonical JSON with sorted keys) and the ``runtime`` section (device,
data root, checkpoint cadence: where and how fast, not what), so the same run always lands in
the same run directory whichever cluster, profile or machine executes it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from vitbench.spec.schema import RUNTIME_KEY

ID_LENGTH = 12


# Keys added after runs were first recorded, left out of the id at the value every earlier run had, so that
# earlier ids stand: (section, key) -> that value.
LATER_KEYS: dict[tuple[str, str], Any] = {
    ("model", "init_sha256"): None, ("pretrain", "objective"): "supervised", ("pretrain", "mpp_target"): "mean_color",
}
# Never in the id: a checkpoint's path (model.init_sha256 stands for it, so a moved file keeps its runs).
PATH_KEYS = {("model", "init")}


def defining_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The part of a run config that defines the run."""
    out = {k: v for k, v in cfg.items() if k != RUNTIME_KEY}
    if "plugins" in out:  # the plugins' contents define the run, not where they lie; none: as before plugins
        hashes = sorted(e["sha256"] for e in out.pop("plugins") or [] if isinstance(e, dict) and "sha256" in e)
        if hashes:
            out["plugins"] = hashes
    for section in {s for s, _ in (*LATER_KEYS, *PATH_KEYS)}:
        sub = out.get(section)
        if isinstance(sub, dict):
            out[section] = {k: v for k, v in sub.items() if (section, k) not in PATH_KEYS
                            and ((section, k) not in LATER_KEYS or v != LATER_KEYS[(section, k)])}
    return out


def canonical(cfg: dict[str, Any]) -> str:
    # floats print via repr, so 0.001 and 1e-3 (both parsed to the same float) hash the same
    return json.dumps(defining_config(cfg), sort_keys=True, separators=(",", ":"), allow_nan=False)


def run_id(cfg: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(cfg).encode()).hexdigest()[:ID_LENGTH]
