"""Model registry: every model is found by a name such as ``ViT-B/16``, ``BiT-R50x1`` or ``R50+B/16``.

Each family (vit, bit, hybrid) registers a name grammar (a regex), its canonical names (for
``list_models``), the options it accepts with their defaults, a validator and a builder, via the
``@register_model`` decorator on its builder function. ``create_model`` parses the name, checks the
options and calls the builder; ``validate_model_kwargs`` runs the same checks without building, so
config validation and model construction can never disagree.

All errors are ``ValueError`` with a one-line message that names what is allowed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

from torch import nn

Family = Literal["vit", "bit", "hybrid", "plugin"]
FAMILIES = ("vit", "bit", "hybrid")  # built in; "plugin": a model a plugin file registered (vitbench.plugins)

# Arguments every builder takes; not "options" of a family.
COMMON_KEYS = ("num_classes", "img_size", "in_chans")

# Options of the ViT encoder (also used by the hybrid). Kept here so the BiT family can tolerate them at
# their defaults: run configs carry them for every model.
VIT_DEFAULTS: dict[str, Any] = {
    "pos_embed": "learned_1d",
    "pos_placement": "stem",
    "pool": "cls",
    "pre_logits": True,
    "dropout": 0.0,
    "drop_path": 0.0,
}

Validator = Callable[[str, "re.Match[str]", dict[str, Any]], None]
Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class _Entry:
    family: str
    pattern: re.Pattern[str]
    grammar: str  # one-line human description of the names, used in error messages
    names: tuple[str, ...]  # canonical names listed by list_models()
    defaults: Mapping[str, Any]  # accepted options and their defaults
    validate: Validator  # (name, match, options with defaults filled) -> None or ValueError
    build: Builder


_REGISTRY: dict[str, _Entry] = {}


def register_model(
    family: str, *, pattern: str, grammar: str, names: tuple[str, ...], defaults: Mapping[str, Any],
    validate: Validator,
) -> Callable[[Builder], Builder]:
    """Register a model family's builder ``fn(match, *, name, num_classes, img_size, in_chans, **options)``."""

    def deco(fn: Builder) -> Builder:
        _REGISTRY[family] = _Entry(family, re.compile(pattern), grammar, tuple(names), dict(defaults), validate, fn)
        return fn

    return deco


def register_plugin_model(name: str, fn: Callable[..., nn.Module], options: tuple[str, ...],
                          validate: Callable[[dict[str, Any]], None] | None) -> Callable[[], None]:
    """A plugin's model (vitbench.plugins.model) under its exact name; returns the undo. ValueError: a clash."""
    unknown = [o for o in options if o not in VIT_DEFAULTS]
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}; allowed: {', '.join(VIT_DEFAULTS)}")
    for entry in _REGISTRY.values():
        if entry.pattern.fullmatch(name):
            raise ValueError(f"{name!r} is a name of the {entry.family} family ({entry.grammar}); choose another")

    def check(model: str, m: re.Match[str], opts: dict[str, Any]) -> None:
        for key in VIT_DEFAULTS:  # run configs carry every model key: those it does not take stay at default
            if key not in options and opts[key] != VIT_DEFAULTS[key]:
                raise ValueError(f"{model}: {key}={opts[key]!r} is not an option of this plugin model (leave it at "
                                 f"{VIT_DEFAULTS[key]!r}); allowed: {', '.join(options) or 'none'}")
        if validate is not None:
            validate({k: opts[k] for k in options})

    def build(m: re.Match[str], *, name: str, num_classes: int, img_size: int, in_chans: int,
              **opts: Any) -> nn.Module:
        return fn(num_classes=num_classes, img_size=img_size, in_chans=in_chans, **{k: opts[k] for k in options})

    key = f"plugin:{name}"
    _REGISTRY[key] = _Entry("plugin", re.compile(re.escape(name)), name, (name,), dict(VIT_DEFAULTS), check, build)
    return lambda: _REGISTRY.pop(key, None)


def _lookup(name: Any) -> tuple[_Entry, re.Match[str]]:
    if isinstance(name, str):
        for entry in _REGISTRY.values():
            m = entry.pattern.fullmatch(name)
            if m:
                return entry, m
    allowed = "; ".join(e.grammar for e in _REGISTRY.values())
    raise ValueError(f"unknown model {name!r}; allowed: {allowed}")


def list_models(family: str | None = None) -> list[str]:
    """Canonical model names (all families, or one), in registration order."""
    return [n for e in _REGISTRY.values() if family in (None, e.family) for n in e.names]


def model_family(name: str) -> Family:
    """'vit', 'bit' or 'hybrid' for a model name; ValueError for an unknown name."""
    return _lookup(name)[0].family  # type: ignore[return-value]


def patch_size(name: str) -> int | None:
    """A ViT name's patch size (ViT-B/16 -> 16); None for a model without one in its name."""
    m = _lookup(name)[1]
    return int(m["patch"]) if m.re.groupindex.get("patch") else None


def model_defaults(name: str) -> dict[str, Any]:
    """The options a model accepts, with their defaults."""
    return dict(_lookup(name)[0].defaults)


def _check_int(name: str, key: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: {key} must be an integer >= {minimum}, got {value!r}")


def validate_model_kwargs(name: str, kwargs: Mapping[str, Any]) -> None:
    """Check a model name and its options without building anything.

    ``kwargs`` are the options passed to ``create_model`` (``pos_embed``, ``pool``, ...); it may also hold
    ``num_classes``, ``img_size`` and ``in_chans``, which are then checked too (e.g. img_size divisible
    by the patch size). Raises ``ValueError`` with a one-line message naming what is allowed.
    """
    entry, m = _lookup(name)
    for key, minimum in (("num_classes", 0), ("img_size", 1), ("in_chans", 1)):
        if key in kwargs:
            _check_int(name, key, kwargs[key], minimum)
    unknown = [k for k in kwargs if k not in entry.defaults and k not in COMMON_KEYS]
    if unknown:
        raise ValueError(f"{name}: unknown option {unknown[0]!r}; allowed: {', '.join(entry.defaults)}")
    entry.validate(name, m, {**entry.defaults, **kwargs})


def create_model(name: str, *, num_classes: int, img_size: int, in_chans: int = 3,
                 init: str | os.PathLike[str] | None = None, **kwargs: Any) -> nn.Module:
    """Build a model by name: freshly initialised, or with a published checkpoint's weights (``init``).

    ``init`` is a timm state dict or one of the paper's flax ``.npz`` layouts, adapted to ``img_size`` and
    ``num_classes`` as the paper's fine-tuning does (:func:`vitbench.models.published.init_from_file`).
    Build big models inside ``with torch.device('meta'):`` to inspect them without allocating memory.
    """
    common = {"num_classes": num_classes, "img_size": img_size, "in_chans": in_chans}
    validate_model_kwargs(name, {**kwargs, **common})
    entry, m = _lookup(name)
    model = entry.build(m, name=name, **common, **{**entry.defaults, **kwargs})
    if init is not None:
        from vitbench.models.published import init_from_file

        init_from_file(model, init)
    return model


# ---- small checks shared by the family validators -------------------------------------------------------


def check_choice(name: str, key: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: {key}={value!r} is not allowed; allowed: {', '.join(map(str, choices))}")


def check_rate(name: str, key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name}: {key} must be a number in [0, 1), got {value!r}")


def check_bool(name: str, key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: {key} must be true or false, got {value!r}")


def config_kwargs(m: Mapping[str, Any]) -> dict[str, Any]:
    """The ``create_model`` options a run config's ``model`` section implies (ViT-only keys for ViT/hybrid)."""
    # drop_path: stochastic depth for every family (ViT/hybrid blocks; BiT via timm ResNetV2 drop_path_rate)
    kw: dict[str, Any] = {"dropout": m["dropout"], "drop_path": m.get("drop_path", 0.0)}
    if model_family(m["name"]) in ("vit", "hybrid", "plugin"):  # a plugin model checks which it takes
        kw.update(pos_embed=m["pos_embed"], pos_placement=m["pos_placement"], pool=m["pool"],
                  pre_logits=m["pre_logits"])
    return kw


def from_config(m: Mapping[str, Any], *, num_classes: int, img_size: int) -> nn.Module:
    """The model a run config's ``model`` section describes (the one place a config becomes a model)."""
    return create_model(m["name"], num_classes=num_classes, img_size=img_size, **config_kwargs(m))
