"""Loading and checking one run config (the unit ``vitbench run-one`` executes)."""

from __future__ import annotations

import codecs
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from vitbench.errors import UserError
from vitbench.spec import yamlio
from vitbench.spec.schema import deep_merge, default_config, validate_structure


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Safe-load a YAML file; any problem is a one-line UserError naming the file.

    The single home for reading YAML files (experiments, run configs, profiles, compare variants):
    a regular file of at most yamlio.MAX_FILE_BYTES, UTF-8 (a BOM is allowed) or UTF-16 with a BOM,
    one document, within yamlio's limits on nesting, size (aliases expanded) and types.
    """
    file = str(path)
    try:
        path = Path(path)
        info = path.stat()
    except FileNotFoundError:
        raise UserError("no such file", file=file) from None
    except (OSError, ValueError) as exc:  # a path too long, a symlink loop, a NUL byte in it
        raise UserError(f"cannot read: {_one_line(getattr(exc, 'strerror', None) or exc)}", file=file) from None
    _check_regular(info, file)
    limit = yamlio.MAX_FILE_BYTES
    too_big = f"is larger than {limit // 1024} KiB; experiment, config and profile files are small"
    if info.st_size > limit:
        raise UserError(f"{too_big} ({info.st_size} bytes)", file=file)
    try:
        # O_NONBLOCK: should the path have become a FIFO since stat, opening it does not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            _check_regular(os.fstat(fh.fileno()), file)
            data = fh.read(limit + 1)  # the size may have changed since stat
    except OSError as exc:
        raise UserError(f"cannot read: {exc.strerror or _one_line(exc)}", file=file) from None
    if len(data) > limit:
        raise UserError(too_big, file=file)
    text = _decode(data, file)
    try:
        return yamlio.loads(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, a lone surrogate, ...)
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise UserError(f"invalid YAML at line {line}, column {col}: unacceptable character {char} "
                        f"({exc.reason})", file=file) from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        pos = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        context = getattr(exc, "context", None)
        if context and not isinstance(exc, yamlio.RefusedYAML):
            problem = f"{context}, {problem}"  # e.g. "while parsing a flow sequence, expected ',' or ']'"
        kind = "refused" if isinstance(exc, yamlio.RefusedYAML) else "invalid YAML"
        raise UserError(f"{kind}{pos}: {' '.join(str(problem).split())}", file=file) from None


def _check_regular(info: os.stat_result, file: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        what = ("a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode)
                else "a device or socket")
        raise UserError(f"not a regular file ({what})", file=file)


def _decode(data: bytes, file: str) -> str:
    """UTF-8 (optionally with a BOM) or UTF-16 with a BOM: the encodings YAML 1.2 readers must accept."""
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise UserError("is UTF-32 text; save it as UTF-8", file=file)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding, name = "utf-16", "UTF-16"
    else:
        encoding, name = "utf-8-sig", "UTF-8"
    if encoding == "utf-8-sig" and b"\x00" in data:
        at = data.index(b"\x00")
        line = data.count(b"\n", 0, at) + 1
        raise UserError(f"is not UTF-8 text: a NUL byte at byte {at} (line {line}); "
                        "UTF-16 needs a byte-order mark", file=file)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"is not {name} text: {exc.reason} at byte {exc.start} (line {line})", file=file) from None


def resolve_run_config(partial: dict[str, Any], *, file: str | None = None,
                       check_data: bool = True) -> dict[str, Any]:
    """Defaults ⊕ partial, then every semantic check (model names, pos-emb combos, datasets)."""
    partial = validate_structure(partial, file=file)
    cfg = deep_merge(default_config(), partial)
    check_semantics(cfg, file=file, check_data=check_data)
    return cfg


def check_semantics(cfg: dict[str, Any], *, file: str | None = None, check_data: bool = True) -> None:
    """Cross-field checks the schema cannot express; raises UserError naming the key."""
    from vitbench.data import DataRootError, check_data_root, list_datasets, parse_augment
    from vitbench.models import config_kwargs, validate_model_kwargs

    m = cfg["model"]
    try:
        validate_model_kwargs(m["name"], config_kwargs(m))
    except (ValueError, KeyError) as exc:
        key = "model.name" if "model" in str(exc).lower() and "unknown" in str(exc).lower() else "model"
        raise UserError(_one_line(exc), file=file, key=key) from None
    known = list_datasets()
    fs, ft = cfg["eval"]["fewshot"], cfg["eval"]["finetune"]
    datasets = [("pretrain.dataset", cfg["pretrain"]["dataset"])]
    datasets += [(f"eval.fewshot.datasets[{i}]", d) for i, d in enumerate(fs["datasets"])]
    if ft["dataset"]:
        datasets.append(("eval.finetune.dataset", ft["dataset"]))
    for key, name in datasets:
        if name not in known:
            raise UserError(f"unknown dataset {name!r}; allowed: {', '.join(sorted(known))}", file=file, key=key)
    if len(set(fs["shots"])) != len(fs["shots"]):
        raise UserError("shot counts must be distinct", file=file, key="eval.fewshot.shots")
    if ft["dataset"] and not ft["lrs"]:
        raise UserError("needs at least one learning rate (or set eval.finetune.dataset: null)",
                        file=file, key="eval.finetune.lrs")
    check_budgets(cfg, file=file)
    check_objective(cfg, file=file)
    for key, section in (("pretrain", cfg["pretrain"]), ("eval.finetune", ft)):
        try:
            aug = parse_augment(section["augment"])
        except ValueError as exc:
            raise UserError(_one_line(exc), file=file, key=f"{key}.augment") from None
        if (aug.mixup or aug.cutmix) and section["batch_size"] % 2:
            raise UserError(f"Mixup/CutMix pair sample i with B-1-i: needs an even batch, got {section['batch_size']}",
                            file=file, key=f"{key}.batch_size")
    if check_data:
        from vitbench.spec.budget import evaluation_only

        root = cfg["runtime"]["data_root"] or os.environ.get("VITBENCH_DATA")
        if evaluation_only(cfg):  # a published model evaluated as it is: its pretraining set is not read
            datasets = datasets[1:]
        for key, name in datasets:
            try:
                check_data_root(name, root)
            except DataRootError as exc:
                raise UserError(_one_line(exc), file=file, key=key) from None


def check_budgets(cfg: dict[str, Any], *, file: str | None = None) -> None:
    """Each phase states steps or epochs (one of the two); warm-up fits in the planned steps."""
    from vitbench.spec.budget import sections, steps_for

    for kind, (key, section, n_train) in sections(cfg).items():
        given = [k for k in ("steps", "epochs") if section.get(k) is not None]
        if len(given) != 1:
            what = "both" if given else "neither"
            raise UserError(f"{key}.steps and {key}.epochs: set exactly one, got {what}", file=file,
                            key=f"{key}.{given[-1] if given else 'steps'}")
        if section.get("epochs") is not None and n_train is None:
            continue  # the run converts with the size it loads
        steps = steps_for(section, n_train or 0)
        if kind == "pretrain" and section["warmup_steps"] > steps > 0:
            raise UserError(f"warm-up ({section['warmup_steps']}) is longer than the run ({steps} steps)",
                            file=file, key=f"{key}.warmup_steps")


def check_objective(cfg: dict[str, Any], *, file: str | None = None) -> None:
    """Masked patch prediction needs a ViT's patch tokens and unmixed images; ``none`` is a zero budget."""
    from vitbench.models import model_family, patch_size
    from vitbench.spec.budget import steps_for

    p, m = cfg["pretrain"], cfg["model"]
    if p["objective"] == "none" and steps_for(p, 1) != 0:
        raise UserError("none means no pretraining (a model trained from scratch): set pretrain.steps: 0",
                        file=file, key="pretrain.objective")
    if p["objective"] != "masked_patch":
        return
    if model_family(m["name"]) != "vit":
        raise UserError(f"masked_patch corrupts a ViT's patch embeddings; {m['name']} is a "
                        f"{model_family(m['name'])} model", file=file, key="pretrain.objective")
    patch = patch_size(m["name"])
    if p["mpp_target"] == "color_4x4" and patch and patch % 4:
        raise UserError(f"color_4x4 pools each patch to 4x4: the patch size ({patch}) must be a multiple of 4",
                        file=file, key="pretrain.mpp_target")
    for key in ("mixup", "cutmix"):
        if p["augment"][key]:
            raise UserError("masked patch prediction predicts the image's own patches: Mixup/CutMix must be 0",
                            file=file, key=f"pretrain.augment.{key}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().strip("'\"") or type(exc).__name__
    return " ".join(text.split())


def load_run_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> dict[str, Any]:
    """A run config file (partial; defaults fill the rest) plus ``--set`` overrides."""
    from vitbench.spec.overrides import apply_overrides

    raw = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"must be a mapping of run-config keys, got {type(raw).__name__}", file=str(path))
    raw = apply_overrides(validate_structure(raw, file=str(path)), overrides or [], file=str(path))
    return stamp_hashes(resolve_run_config(raw, file=str(path)), file=str(path))


def stamp_hashes(cfg: dict[str, Any], *, file: str | None = None) -> dict[str, Any]:
    """The config with the content hashes its run id needs: the checkpoint's (model.init_sha256) and those of the
    plugins whose names it uses (plugins). Every planned run and every run-one config goes through here."""
    from vitbench.models.published import stamp_init
    from vitbench.plugins import stamp_plugins

    return stamp_plugins(stamp_init(cfg, file=file))
