"""Your variant in your own file: plugins register models, position embeddings, pooling heads and datasets.

A plugin is a Python file named in an experiment file (``plugins: [path, ...]``, relative to that file) or on the
command line (``--plugin PATH``). vitbench imports it, so it runs: plugins are code by design, the one input besides
a profile's shell setup lines that vitbench executes. What it registers is then a name like the built-ins::

    from vitbench import plugins

    @plugins.pos_embed("rope_2d", kind="attention")   # or kind="absolute"
    class Rope2d(torch.nn.Module): ...
    @plugins.pool("attn_pool", needs_cls=False)        # tokens (B, N, D) -> (B, D)
    @plugins.model("MyNet", options=("dropout",))     # builder(*, num_classes, img_size, in_chans, **options)
    @plugins.dataset("my_data")                        # a vitbench.data.registry.DatasetBuilder subclass

Identity: a run that uses a name a plugin registered carries that plugin's file and sha256 in its config
(``plugins``, filled in at planning, :func:`stamp_plugins`); the sha256 (not the path) is part of its run id, and
runs that use none of its names are unaffected. The job imports the same file and checks its hash first: a file
changed after planning fails the run with one line (:func:`load_for_run`), rather than training other code under
the old id. Every load error (syntax, an exception at import, a name clash, bad options) is one line naming the
plugin file, and exit code 2.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from vitbench.errors import UserError

KINDS = ("model", "pos_embed", "pool", "dataset")
POS_KINDS = ("absolute", "attention")


@dataclass
class Plugin:
    file: str  # resolved path
    sha256: str
    names: list[tuple[str, str]] = field(default_factory=list)  # (kind, name) it registered
    undo: list[Callable[[], None]] = field(default_factory=list)


_LOADED: dict[str, Plugin] = {}  # resolved path -> plugin
_OWNERS: dict[tuple[str, str], Plugin] = {}  # (kind, name) -> the plugin that registered it
_CURRENT: list[Plugin] = []  # the plugin being imported (registrations belong to it)


def _claim(kind: str, name: Any, builtin: Iterable[str]) -> Plugin:
    if not _CURRENT:
        raise UserError(f"plugins.{kind}({name!r}) is called outside a plugin file: name the file with --plugin or "
                        "an experiment's plugins: (its hash then identifies the runs that use it)")
    plugin = _CURRENT[-1]
    if not isinstance(name, str) or not name or name.strip() != name:
        raise UserError(f"plugins.{kind}: the name must be a non-empty string without surrounding spaces, got "
                        f"{name!r}", file=plugin.file)
    if name in builtin:
        raise UserError(f"{kind} {name!r} is a built-in name; choose another", file=plugin.file)
    other = _OWNERS.get((kind, name))
    if other is not None:
        raise UserError(f"{kind} {name!r} is already registered by {other.file}", file=plugin.file)
    _OWNERS[(kind, name)] = plugin
    plugin.names.append((kind, name))
    plugin.undo.append(lambda: _OWNERS.pop((kind, name), None))
    return plugin


def pos_embed(name: str, *, kind: str = "absolute") -> Callable[[type], type]:
    """Register a position embedding class.

    ``kind="absolute"``: ``cls(grid_size, dim, num_prefix_tokens)``, ``forward(x)`` returns the tokens (B, N, D)
    with positions added; it is placed like the built-ins (``model.pos_placement``). ``kind="attention"``:
    ``cls(grid_size, head_dim, num_prefix_tokens)``, ``forward(q, k)`` returns them transformed (B, heads, N, hd)
    in every block (rotary embeddings); stem placement only. Both: ``set_grid_size(grid)`` for a new resolution.
    """
    from vitbench.models import pos_embed as pe

    def deco(cls: type) -> type:
        plugin = _claim("pos_embed", name, pe.POS_EMBEDS)
        if kind not in POS_KINDS:
            raise UserError(f"plugins.pos_embed({name!r}): kind={kind!r}; allowed: {', '.join(POS_KINDS)}",
                            file=plugin.file)
        _require(plugin, cls, name, ("forward", "set_grid_size"))
        pe.PLUGIN_POS[name] = (kind, cls)
        plugin.undo.append(lambda: pe.PLUGIN_POS.pop(name, None))
        return cls

    return deco


def pool(name: str, *, needs_cls: bool = False) -> Callable[[type], type]:
    """Register a pooling head: ``cls(dim)``, ``forward(tokens)`` (B, N, D) -> (B, D); ``needs_cls``: the tokens
    start with a [class] token."""
    from vitbench.models import vit

    def deco(cls: type) -> type:
        plugin = _claim("pool", name, vit.POOLS)
        if not isinstance(needs_cls, bool):
            raise UserError(f"plugins.pool({name!r}): needs_cls must be true or false", file=plugin.file)
        _require(plugin, cls, name, ("forward",))
        vit.PLUGIN_POOLS[name] = (needs_cls, cls)
        plugin.undo.append(lambda: vit.PLUGIN_POOLS.pop(name, None))
        return cls

    return deco


def model(name: str, *, options: Iterable[str] = ("dropout", "drop_path"),
          validate: Callable[[dict[str, Any]], None] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a model builder ``fn(*, num_classes, img_size, in_chans, **options)``.

    ``options``: the run config's ``model`` keys it takes (of pos_embed, pos_placement, pool, pre_logits, dropout,
    drop_path); the others must stay at their defaults. ``validate(options)`` may raise ValueError (one line). The
    model has vitbench's interface: ``forward``, ``forward_features`` (B, num_features), ``num_features``,
    ``reset_classifier(num_classes)``, ``set_img_size(img_size)``.
    """
    from vitbench.models import registry

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        plugin = _claim("model", name, ())
        try:
            undo = registry.register_plugin_model(name, fn, tuple(options), validate)
        except ValueError as exc:
            raise UserError(f"plugins.model({name!r}): {exc}", file=plugin.file) from None
        plugin.undo.append(undo)
        return fn

    return deco


def dataset(name: str) -> Callable[[type], type]:
    """Register a :class:`vitbench.data.registry.DatasetBuilder` subclass whose ``info.name`` is ``name``."""
    from vitbench.data import registry

    def deco(cls: type) -> type:
        plugin = _claim("dataset", name, registry.list_datasets())
        if not (isinstance(cls, type) and issubclass(cls, registry.DatasetBuilder)):
            raise UserError(f"plugins.dataset({name!r}): {getattr(cls, '__name__', cls)} is not a DatasetBuilder "
                            "subclass", file=plugin.file)
        try:
            registry.register_dataset(name)(cls)
        except (ValueError, AttributeError) as exc:
            raise UserError(f"plugins.dataset({name!r}): {exc}", file=plugin.file) from None
        plugin.undo.append(lambda: registry.unregister_dataset(name))
        return cls

    return deco


def _require(plugin: Plugin, cls: Any, name: str, methods: tuple[str, ...]) -> None:
    missing = [m for m in methods if not callable(getattr(cls, m, None))]
    if not isinstance(cls, type) or missing:
        raise UserError(f"{name!r}: {getattr(cls, '__name__', cls)} must be a class with "
                        f"{', '.join(methods)} (missing: {', '.join(missing) or 'not a class'})", file=plugin.file)


# ---- loading -------------------------------------------------------------------------------------------------


def _one_line(exc: BaseException, path: Path) -> str:
    line = getattr(exc, "lineno", None)
    if line is None:  # the deepest frame in the plugin file
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
        line = frames[-1].lineno if frames else None
    text = " ".join(str(getattr(exc, "msg", None) or exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" + (f" (line {line})" if line else "")


def load_plugin(path: str | os.PathLike[str], *, file: str | None = None, key: str = "plugins") -> Plugin:
    """Import a plugin file once (by resolved path and content); every failure is one line naming the file."""
    from vitbench.models.published import file_sha256

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"no plugin file at {p}", file=file, key=key)
    p = p.resolve()
    digest = file_sha256(p)
    loaded = _LOADED.get(str(p))
    if loaded is not None:
        if loaded.sha256 != digest:
            raise UserError(f"{p} changed after it was loaded in this process (sha256 {digest[:12]}, loaded "
                            f"{loaded.sha256[:12]})", file=file, key=key)
        return loaded
    plugin = Plugin(str(p), digest)
    spec = importlib.util.spec_from_file_location(f"vitbench_plugin_{digest[:16]}", p)
    if spec is None or spec.loader is None:
        raise UserError("is not a Python file vitbench can import", file=str(p))
    module = importlib.util.module_from_spec(spec)
    _CURRENT.append(plugin)
    try:
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    except UserError as exc:
        _rollback(plugin, spec.name)
        raise UserError(str(exc) if str(exc).startswith(str(p)) else f"{p}: {exc}") from None
    except (Exception, SystemExit) as exc:  # a plugin may raise anything while importing: one line
        _rollback(plugin, spec.name)
        raise UserError(f"cannot be loaded: {_one_line(exc, p)}", file=str(p)) from None
    finally:
        _CURRENT.pop()
    if not plugin.names:
        raise UserError("registers nothing (use plugins.model / pos_embed / pool / dataset)", file=str(p))
    _LOADED[str(p)] = plugin
    return plugin


def _rollback(plugin: Plugin, module: str) -> None:
    for undo in reversed(plugin.undo):
        undo()
    sys.modules.pop(module, None)


def load_plugins(paths: Iterable[str | os.PathLike[str]], *, file: str | None = None, key: str = "plugins") -> None:
    for i, path in enumerate(paths):
        load_plugin(path, file=file, key=f"{key}[{i}]" if file else key)


# ---- identity ------------------------------------------------------------------------------------------------


def used_names(cfg: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, name) of every registrable name a run config uses."""
    m, fs, ft = cfg["model"], cfg["eval"]["fewshot"], cfg["eval"]["finetune"]
    names = [("model", m["name"]), ("pos_embed", m["pos_embed"]), ("pool", m["pool"]),
             ("dataset", cfg["pretrain"]["dataset"])]
    names += [("dataset", d) for d in fs["datasets"]] + ([("dataset", ft["dataset"])] if ft["dataset"] else [])
    return names


def stamp_plugins(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config with ``plugins``: the file and sha256 of each plugin whose names it uses (sorted, no repeats)."""
    owners = {id(p): p for k in used_names(cfg) if (p := _OWNERS.get(k)) is not None}
    used = sorted(({"file": p.file, "sha256": p.sha256} for p in owners.values()), key=lambda e: e["file"])
    if used == cfg.get("plugins", []):
        return cfg
    return {**cfg, "plugins": used}


def load_for_run(cfg: dict[str, Any]) -> None:
    """At run start: import the config's plugins, each only if it still has the bytes the run was planned with."""
    from vitbench.models.published import file_sha256

    for entry in cfg.get("plugins") or []:
        p = Path(entry["file"])
        if not p.is_file():
            raise UserError(f"{p} is gone since the run was planned", key="plugins")
        if file_sha256(p) != entry["sha256"]:
            raise UserError(f"{p} changed after the run was planned (sha256 {file_sha256(p)[:12]}, planned "
                            f"{entry['sha256'][:12]}); plan it again", key="plugins")
        load_plugin(p)
