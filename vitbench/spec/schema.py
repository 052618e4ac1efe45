"""The run-config schema: every key a run accepts, its type, default and meaning.

A *run config* is a nested dict (YAML on disk). Everything outside ``runtime`` defines the
run and feeds its id (see ``vitbench.plan.ids.run_id``); ``runtime`` holds site and speed knobs
(device, data root, checkpoint cadence) that must not change which run directory a run uses.

Like vision_transformer's base config, every field carries a comment: ``help``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

from vitbench.errors import UserError
from vitbench.models import PLACEMENTS, VIT_DEFAULTS  # the models own their options
from vitbench.models.pos_embed import pos_embed_names
from vitbench.models.vit import pool_names
from vitbench.train.mpp import TARGETS as MPP_TARGETS


@dataclass(frozen=True)
class Field:
    """One leaf of the schema."""

    type: tuple[type, ...]  # allowed Python types of the value (after YAML parsing)
    default: Any
    help: str
    choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None  # a callable: plugins add names
    nullable: bool = False
    minimum: float | None = None  # inclusive lower bound for numbers and list items
    item_type: type | None = None  # for lists: type of each item
    exclusive_min: bool = False  # True: value must be > minimum


INT = (int,)
FLOAT = (float, int)  # YAML writes 1e-3 as float but 1 as int; both are fine for floats
STR = (str,)
BOOL = (bool,)
LIST = (list,)

AUGMENT = {
    "crop": Field(STR, "none", "random crop: none | pad_crop | random_resized", choices=("none", "pad_crop", "random_resized")),
    "flip": Field(BOOL, False, "random horizontal flip"),
    "randaugment": Field(STR, None, "timm RandAugment config string, e.g. rand-m15-n2 (AugReg 'medium'; timm caps "
                         "the magnitude at 10 unless -mmax15 is added); per sample after crop and flip; null = off",
                         nullable=True),
    "mixup": Field(FLOAT, 0.0, "Mixup alpha (timm.data.Mixup, per-sample lambda); 0 = off", minimum=0.0),
    "cutmix": Field(FLOAT, 0.0, "CutMix alpha (timm.data.Mixup, per-sample); 0 = off", minimum=0.0),
}

# Budgets are stated in steps or in epochs of the training split (after the dev split and the
# nested subset), one of the two: a layer that sets one clears the other (see deep_merge).
EXCLUSIVE = {"steps": "epochs", "epochs": "steps"}

SCHEMA: dict[str, Any] = {
    "seed": Field(INT, 0, "run seed: model init, data order, augmentation, few-shot draws", minimum=0),
    "plugins": Field(LIST, [], "the plugin files whose names this run uses, {file, sha256} each: filled in at "
                     "planning (the sha256 is part of the run id), checked when the job starts (vitbench.plugins)",
                     item_type=dict),
    "model": {
        "name": Field(STR, "ViT-micro/4", "registered model name, e.g. ViT-B/16, BiT-R50x1, R50+B/16, ViT-micro/4"),
        "pos_embed": Field(STR, VIT_DEFAULTS["pos_embed"], "ViT position embedding (paper Table 8; plugins add names)",
                           choices=pos_embed_names),
        "pos_placement": Field(STR, VIT_DEFAULTS["pos_placement"], "where position embeddings are added (Table 8 columns)",
                               choices=PLACEMENTS),
        "pool": Field(STR, VIT_DEFAULTS["pool"], "representation: [class] token or global average pooling (App. D.3)",
                      choices=pool_names),
        "pre_logits": Field(BOOL, VIT_DEFAULTS["pre_logits"], "paper's pretraining head: Linear(D,D)+tanh before the classifier"),
        "dropout": Field(FLOAT, VIT_DEFAULTS["dropout"], "dropout rate (paper: 0.1 for ImageNet/21k pretraining, 0 for JFT)",
                         minimum=0.0),
        "drop_path": Field(FLOAT, VIT_DEFAULTS["drop_path"], "stochastic depth rate of the last block, linear in depth (timm DropPath); "
                           "paper: 0", minimum=0.0),
        "init": Field(STR, None, "published checkpoint to start from (README: Published models): a path, absolute or "
                      "under the data root; a timm state dict or the vision_transformer / big_vision / BiT .npz; "
                      "null = random init", nullable=True),
        "init_sha256": Field(STR, None, "sha256 of model.init's bytes, part of the run id instead of the path; filled "
                             "in at planning, checked again when the run starts; a value given must match", nullable=True),
    },
    "pretrain": {
        "dataset": Field(STR, "synthetic", "pretraining dataset name (see vitbench.data.list_datasets)"),
        "size": Field(INT, None, "pretraining-set size N: the first N of a fixed permutation (nested subsets); null = all",
                      nullable=True, minimum=1),
        "img_size": Field(INT, 16, "pretraining resolution in pixels", minimum=1),
        "steps": Field(INT, 300, "optimiser steps (or set epochs instead)", nullable=True, minimum=0),
        "epochs": Field(FLOAT, None, "passes over the training split, converted to steps at run time "
                        "(paper Table 3: ImageNet 300, ImageNet-21k 90); set steps or epochs", nullable=True, minimum=0.0),
        "batch_size": Field(INT, 128, "global batch size", minimum=1),
        "optimizer": Field(STR, "adamw", "adam = adamw: both build torch AdamW, the update of the paper's "
                           "flax.optim.Adam", choices=("adam", "adamw")),
        "lr": Field(FLOAT, 1e-3, "peak learning rate", minimum=0.0, exclusive_min=True),
        "b1": Field(FLOAT, 0.9, "Adam beta1", minimum=0.0),
        "b2": Field(FLOAT, 0.999, "Adam beta2", minimum=0.0),
        "weight_decay": Field(FLOAT, 0.1, "decoupled and x lr, on kernels only (flax.optim.Adam: param -= lr*wd*param); "
                              "paper: 0.1 on JFT", minimum=0.0),
        "warmup_steps": Field(INT, 30, "linear warm-up steps", minimum=0),
        "decay": Field(STR, "linear", "decay after warm-up", choices=("linear", "cosine")),
        "grad_clip": Field(FLOAT, 1.0, "clip gradients at this global norm; 0 disables", minimum=0.0),
        "label_smoothing": Field(FLOAT, 0.0, "label smoothing of the cross-entropy", minimum=0.0),
        "objective": Field(STR, "supervised", "supervised (labels) | masked_patch (self-supervised, paper §4.6, "
                           "App. B.1.2: vitbench/train/mpp.py) | none (no pretraining: from scratch; budget 0)",
                           choices=("supervised", "masked_patch", "none")),
        "mpp_target": Field(STR, "mean_color", "masked patch prediction's target: mean_color (3-bit mean colour, 512 "
                            "classes) | color_4x4 (4x4, 3-bit colour per pixel) | pixels (L2 on the patch)",
                            choices=MPP_TARGETS),
        "augment": dict(AUGMENT),
    },
    "eval": {
        "fewshot": {
            "datasets": Field(LIST, ["digits"], "few-shot linear transfer datasets; [] disables", item_type=str),
            "shots": Field(LIST, [1, 5, 10, 25], "examples per class (big_vision: 1, 5, 10, 25)", item_type=int, minimum=1),
            "seeds": Field(INT, 3, "draws of the few-shot training examples per shot count", minimum=1),
            "l2": Field(FLOAT, 1024.0, "ridge regulariser of the closed-form least squares (big_vision: 2^10)", minimum=0.0),
            "img_size": Field(INT, None, "resolution of the few-shot images; null = pretraining resolution",
                              nullable=True, minimum=1),
            "every": Field(INT, 0, "pretraining steps between few-shot probes recorded in metrics.jsonl "
                           "(paper Figure 9); 0 = only after pretraining", minimum=0),
            "probe_size": Field(INT, 1000, "test images a probe scores (a fixed seed-independent subset of the first "
                                "dataset's test split); null = the whole split", nullable=True, minimum=1),
        },
        "finetune": {
            "dataset": Field(STR, "digits", "fine-tuning dataset; null disables fine-tuning", nullable=True),
            "steps": Field(INT, 100, "SGD steps per learning rate (paper Table 4: ImageNet 20k, CIFAR 10k, "
                           "Pets/Flowers 500)", nullable=True, minimum=1),
            "epochs": Field(FLOAT, None, "fine-tuning budget in epochs of the training split instead of steps",
                            nullable=True, minimum=0.0, exclusive_min=True),
            "batch_size": Field(INT, 64, "batch size (paper: 512)", minimum=1),
            "lrs": Field(LIST, [0.003, 0.01, 0.03], "learning-rate sweep; picked on the dev split", item_type=float,
                         minimum=0.0),
            "warmup_steps": Field(INT, 10, "linear warm-up steps", minimum=0),
            "grad_clip": Field(FLOAT, 1.0, "global-norm gradient clipping", minimum=0.0),
            "img_size": Field(INT, None, "fine-tuning resolution (paper: 384 for 224 pretraining); null = pretraining's",
                              nullable=True, minimum=1),
            "augment": dict(AUGMENT),
        },
    },
    "runtime": {
        # Not part of the run id: these change where and how fast a run goes, not what it computes.
        "device": Field(STR, "auto", "auto | cpu | cuda | cuda:N"),
        "data_root": Field(STR, None, "root of the real datasets (else $VITBENCH_DATA)", nullable=True),
        "checkpoint_every": Field(INT, 100, "pretraining steps between checkpoints", minimum=1),
        "log_every": Field(INT, 25, "steps between metric lines (and host syncs)", minimum=1),
        "threads": Field(INT, 0, "CPU threads for torch; 0 = SLURM_CPUS_PER_TASK if set, else torch's default. "
                         "Small models on a shared CPU: 1 (spin-waiting threads on shared cores: README, Speed)", minimum=0),
        "compile": Field(BOOL, False, "torch.compile the model (only where measured faster)"),
        "precision": Field(STR, "auto", "auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16",
                           choices=("auto", "fp32", "bf16")),
        "num_workers": Field(INT, 4, "DataLoader workers for streaming (ImageFolder) datasets", minimum=0),
        "eval_batch_size": Field(INT, 512, "batch size for evaluation and feature extraction", minimum=1),
        "progress": Field(STR, "auto", "progress bar: auto (on a terminal) | on | off", choices=("auto", "on", "off")),
    },
}

# Keys that identify a run; ``runtime`` is excluded from the run id.
RUNTIME_KEY = "runtime"


def _defaults(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, sub in node.items():
        out[key] = _defaults(sub) if isinstance(sub, dict) else copy.deepcopy(sub.default)
    return out


def default_config() -> dict[str, Any]:
    """A fresh, fully populated run config with every default."""
    return _defaults(SCHEMA)


def schema_node(path: str) -> Field | dict[str, Any] | None:
    """The schema entry at a dotted path, or None if the path is unknown."""
    node: Any = SCHEMA
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def allowed_keys(path: str) -> list[str]:
    node = SCHEMA if not path else schema_node(path)
    return sorted(node) if isinstance(node, dict) else []


def _type_name(f: Field) -> str:
    names = {int: "int", float: "float", str: "string", bool: "bool", list: "list"}
    base = "float" if f.type == FLOAT else names.get(f.type[0], f.type[0].__name__)
    if f.type == LIST and f.item_type is not None:
        base = f"list of {names.get(f.item_type, f.item_type.__name__)}"
    return base + (" or null" if f.nullable else "")


def check_value(f: Field, value: Any, *, file: str | None, key: str) -> Any:
    """Validate one leaf; returns the value normalised (ints → floats for float fields)."""
    if value is None:
        if f.nullable:
            return None
        raise UserError(f"must be {_type_name(f)}, got null", file=file, key=key)
    # bool is a subclass of int: never accept True for an int field.
    ok = isinstance(value, f.type) and not (isinstance(value, bool) and bool not in f.type)
    if not ok:
        raise UserError(f"must be {_type_name(f)}, got {type(value).__name__} {value!r:.60}", file=file, key=key)
    if f.type == FLOAT:
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise UserError(f"must be a finite number, got {value}", file=file, key=key)
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and f.item_type is not None:
        checked = []
        for i, item in enumerate(value):
            good = isinstance(item, f.item_type) or (f.item_type is float and isinstance(item, int))
            if isinstance(item, bool) or not good:
                raise UserError(f"item {i} must be {_type_name(f)[8:]}, got {item!r:.60}", file=file, key=key)
            checked.append(float(item) if f.item_type is float else item)
        value = items = checked
    choices = f.choices() if callable(f.choices) else f.choices
    if choices is not None and value not in choices:
        raise UserError(f"{value!r} is not allowed; choose one of {', '.join(map(str, choices))}", file=file, key=key)
    if f.minimum is not None:
        for item in items:
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                bad = item <= f.minimum if f.exclusive_min else item < f.minimum
                if bad:
                    rel = ">" if f.exclusive_min else ">="
                    raise UserError(f"must be {rel} {f.minimum:g}, got {item}", file=file, key=key)
    return value


def validate_structure(cfg: Any, *, file: str | None = None, prefix: str = "") -> dict[str, Any]:
    """Check keys and leaf types of a (possibly partial) run config; returns a normalised copy.

    Raises UserError naming the file, the dotted key and what is allowed.
    """
    node = SCHEMA if not prefix else schema_node(prefix)
    assert isinstance(node, dict)
    if not isinstance(cfg, dict):
        raise UserError(f"must be a mapping of {', '.join(sorted(node))}, got {type(cfg).__name__}",
                        file=file, key=prefix or "<top>")
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if not isinstance(key, str) or key not in node:
            raise UserError(f"unknown key; allowed here: {', '.join(sorted(node))}", file=file, key=path)
        sub = node[key]
        if isinstance(sub, dict):
            out[key] = validate_structure(value, file=file, prefix=path)
        else:
            out[key] = check_value(sub, value, file=file, key=path)
    return out


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; values of ``over`` win; lists are replaced, not concatenated."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
            _clear_exclusive(out, over, key)
    return out


def _clear_exclusive(node: dict[str, Any], layer: dict[str, Any], key: str) -> None:
    """Setting steps clears epochs and vice versa, unless the same layer sets both (an error later)."""
    other = EXCLUSIVE.get(key)
    if other is not None and layer.get(key) is not None and other in node and other not in layer:
        node[other] = None


def get_path(cfg: dict[str, Any], path: str) -> Any:
    node: Any = cfg
    for part in path.split("."):
        node = node[part]
    return node


def set_path(cfg: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = cfg
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    _clear_exclusive(node, {parts[-1]: value}, parts[-1])


def flatten(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value and isinstance(schema_node(path), dict):
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out
