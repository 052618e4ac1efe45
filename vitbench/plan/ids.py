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


# Model keys left out of the id: the checkpoint's path (its sha256 stands for it, so a moved file keeps its runs),
# and both at null, so that the ids of runs planned before these keys existed stand.
INIT_KEYS = ("init", "init_sha256")


def defining_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The part of a run config that defines the run."""
    out = {k: v for k, v in cfg.items() if k != RUNTIME_KEY}
    m = out.get("model")
    if isinstance(m, dict) and any(k in m for k in INIT_KEYS):
        out["model"] = {k: v for k, v in m.items()
                        if k not in INIT_KEYS or (k == "init_sha256" and v is not None)}
    return out


def canonical(cfg: dict[str, Any]) -> str:
    # floats print via repr, so 0.001 and 1e-3 (both parsed to the same float) hash the same
    return json.dumps(defining_config(cfg), sort_keys=True, separators=(",", ":"), allow_nan=False)


def run_id(cfg: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(cfg).encode()).hexdigest()[:ID_LENGTH]
