"""From a run directory to the numbers of the analyses: load the checkpointed model, read its weights and
run sample images through it.

Adapters to the models package live here (:func:`position_grid`, :func:`token_stride`,
:func:`filter_weight`): they use only public pieces (``model.pos_embed[i].embedding()``,
``patch_embed.patch_size``, ``HybridEmbed.backbone.feature_info``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitbench.analyze import metrics
from vitbench.errors import UserError

PARTS = ("filters", "pos", "distance", "maps")
MAP_IMAGES = 8  # images shown in the attention-map figure
BATCH = 16  # images per forward pass (attention of every layer is held for a batch)


def note(message: str) -> None:
    """A one-line note on stderr (skipped analyses, fallbacks)."""
    print(f"vitbench analyze: note: {message}", file=sys.stderr, flush=True)


# ---- loading ------------------------------------------------------------------------------------------------


@dataclass
class LoadedRun:
    path: Path
    cfg: dict[str, Any]
    model: nn.Module
    step: int
    family: str

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def model_name(self) -> str:
        return str(self.cfg["model"]["name"])

    @property
    def img_size(self) -> int:
        return int(self.cfg["pretrain"]["img_size"])


def _num_classes(state: dict[str, torch.Tensor]) -> int:
    w = state.get("head.weight")
    return int(w.shape[0]) if w is not None else 0


def load_run(path: str | Path, *, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild a run's model from ``config.yaml`` and its newest readable checkpoint (``ckpt/last.pt``,
    else ``ckpt/prev.pt``). UserError when the directory, the config or the checkpoint is missing."""
    from vitbench.models import config_kwargs, create_model, model_family
    from vitbench.record.rundir import CONFIG, RunDir
    from vitbench.train.checkpoint import load_checkpoint

    rd = RunDir(path)
    if not rd.path.is_dir():
        raise UserError("no such run directory", file=str(rd.path))
    cfg = rd.read_config()
    if cfg is None:
        raise UserError(f"not a run directory (no readable {CONFIG})", file=str(rd.path))
    try:
        name = cfg["model"]["name"]
        family = model_family(name)
        img_size = int(cfg["pretrain"]["img_size"])
        kwargs = config_kwargs(cfg["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"config does not describe a model ({type(exc).__name__}: {exc})",
                        file=str(rd.file(CONFIG))) from None
    if family == "bit":
        raise UserError(f"{name} is a ResNet: it has no attention or position embeddings to analyse "
                        f"(analyze applies to ViT and hybrid runs)", file=str(rd.path), key="model.name")
    ckpt = load_checkpoint(rd.ckpt_dir, log=note)
    if ckpt is None:
        raise UserError("no checkpoint (ckpt/last.pt or ckpt/prev.pt); train the run first", file=str(rd.path))
    state = ckpt["model"]
    model = create_model(name, num_classes=_num_classes(state), img_size=img_size, **kwargs)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise UserError(f"checkpoint does not match the model of config.yaml ({name}): "
                        f"{' '.join(first[:2])[:200]}", file=str(rd.ckpt_dir)) from None
    model.to(device).eval()
    return LoadedRun(rd.path, cfg, model, int(ckpt["step"]), family)


def load_images(cfg: dict[str, Any], n: int, data_root: str | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``n`` test images of the run's pretraining dataset at its pretraining resolution:
    (uint8 images (n, 3, H, W), labels (n,), indices into the test split (n,))."""
    from vitbench.data import get_dataset

    p = cfg["pretrain"]
    root = data_root or (cfg.get("runtime") or {}).get("data_root")
    ds = get_dataset(p["dataset"], "test", img_size=int(p["img_size"]), root=root)
    n = min(n, len(ds))
    if ds.images is not None:
        images = ds.images[:n]
    else:  # streaming dataset: decode the first n files
        images = torch.stack([ds.torch_dataset[i][0] for i in range(n)])
    return images, ds.labels[:n].clone(), torch.arange(n)


# ---- adapters to the models package ---------------------------------------------------------------------------


def position_grid(model: nn.Module) -> tuple[torch.Tensor | None, str]:
    """The patch positions' absolute embedding vectors (gh, gw, D), or None, with a description.

    learned_1d: the learned table minus the class-token entry; learned_2d: concat(Y[i], X[j]) (the
    module's own ``embedding()``); sincos_2d: the fixed table. For ``every_layer`` placement, the first
    layer's embedding. None for ``none`` and ``relative`` (no absolute embedding exists).
    """
    kind = getattr(model, "pos_embed_type", None)
    tables = getattr(model, "pos_embed", None)
    if kind in (None, "none", "relative") or not isinstance(tables, nn.ModuleList) or len(tables) == 0:
        return None, f"the model has no absolute position embedding (pos_embed: {kind})"
    pe = tables[0]
    gh, gw = pe.grid_size
    emb = pe.embedding().detach()[0, model.num_prefix_tokens:]
    desc = kind
    if getattr(model, "pos_placement", "stem") == "every_layer":
        desc += ", every_layer: layer 1's embedding"
    elif getattr(model, "pos_placement", "stem") == "every_layer_shared":
        desc += ", every_layer_shared"
    return emb.reshape(gh, gw, -1).cpu(), desc


def token_stride(model: nn.Module) -> tuple[int, int]:
    """Input pixels between neighbouring tokens: the patch size (ViT), backbone stride × patch (hybrid)."""
    pe = model.patch_embed
    p = tuple(int(v) for v in pe.patch_size)
    backbone = getattr(pe, "backbone", None)
    if backbone is None:
        return p[0], p[1]
    reduction = int(backbone.feature_info[-1]["reduction"])
    return reduction * p[0], reduction * p[1]


def filter_weight(model: nn.Module) -> tuple[torch.Tensor | None, str]:
    """The patch-embedding conv weight (D, C, p, p) when its filters are image patches, else None + why."""
    pe = model.patch_embed
    if getattr(pe, "backbone", None) is not None:
        return None, ("hybrid model: its patch embedding is a 1x1 projection of ResNet features, "
                      "not image filters")
    return pe.proj.weight.detach().cpu(), "patch_embed.proj"


# ---- the analyses -------------------------------------------------------------------------------------------


@dataclass
class RunAnalysis:
    """Everything the figures and CSVs of one run need (missing parts are None, with a note)."""

    run_id: str
    model_name: str
    step: int
    img_size: int
    dataset: str
    pos_kind: str
    pool: str
    token_px: tuple[int, int]
    grid: tuple[int, int]
    filters: tuple[torch.Tensor, torch.Tensor] | None = None  # (components (k,C,p,p), variance ratio (k,))
    pos_similarity: torch.Tensor | None = None  # (gh, gw, gh, gw)
    pos_desc: str = ""
    distance: torch.Tensor | None = None  # (images, layers, heads) in pixels
    uniform_distance: float | None = None
    map_images: torch.Tensor | None = None  # uint8 (K, 3, H, W)
    map_labels: torch.Tensor | None = None
    map_indices: torch.Tensor | None = None
    maps: torch.Tensor | None = None  # (K, gh, gw), each sums to 1
    notes: dict[str, str] = field(default_factory=dict)  # part -> why it is missing
    data_error: str | None = None  # the sample images could not be loaded (a UserError's message)

    @property
    def title(self) -> str:
        return f"{self.model_name} ({self.pos_kind}, {self.pool}) · {self.run_id} · step {self.step}"


ImageCache = dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def analyze_run(run: LoadedRun, *, images: int = 128, parts: tuple[str, ...] = PARTS, data_root: str | None = None,
                device: str | torch.device = "cpu", cache: ImageCache | None = None) -> RunAnalysis:
    """Compute the requested analyses of a loaded run."""
    model = run.model
    m = run.cfg["model"]
    res = RunAnalysis(run.run_id, run.model_name, run.step, run.img_size, str(run.cfg["pretrain"]["dataset"]),
                      str(m.get("pos_embed")), str(m.get("pool")), token_stride(model), tuple(model.grid_size))
    if "filters" in parts:
        w, why = filter_weight(model)
        if w is None:
            res.notes["filters"] = why
        else:
            res.filters = metrics.patch_embed_pcs(w, k=28)
    if "pos" in parts:
        pos, desc = position_grid(model)
        if pos is None:
            res.notes["pos"] = desc
        else:
            res.pos_similarity = metrics.pos_embed_similarity(pos)
            res.pos_desc = desc
    if "distance" in parts or "maps" in parts:
        _attention_analyses(run, res, images=images, parts=parts, data_root=data_root, device=device, cache=cache)
    return res


def _attention_analyses(run: LoadedRun, res: RunAnalysis, *, images: int, parts: tuple[str, ...],
                        data_root: str | None, device: str | torch.device, cache: ImageCache | None) -> None:
    from vitbench.data.ops import to_unit_range

    key = (res.dataset, res.img_size)
    if cache is not None and key in cache:
        imgs, labels, idx = cache[key]
    else:
        try:
            imgs, labels, idx = load_images(run.cfg, images, data_root)
        except UserError as exc:  # e.g. a real dataset whose root is not here: keep the weight analyses
            res.data_error = str(exc)
            for part in ("distance", "maps"):
                if part in parts:
                    res.notes[part] = f"no sample images ({exc})"
            return
        if cache is not None:
            cache[key] = (imgs, labels, idx)
    imgs, labels, idx = imgs[:images], labels[:images], idx[:images]
    n_maps = min(MAP_IMAGES, len(imgs)) if "maps" in parts else 0
    n_dist = len(imgs) if "distance" in parts else n_maps
    prefix = int(run.model.num_prefix_tokens)
    dists, maps = [], []
    with torch.no_grad():
        for s in range(0, n_dist, BATCH):
            x = to_unit_range(imgs[s:s + BATCH]).to(device)
            attns = run.model.forward_attention(x)
            if "distance" in parts:
                dists.append(torch.stack([metrics.mean_attention_distance(a, res.grid, res.token_px, prefix,
                                                                          per_image=True) for a in attns], dim=1))
            if s < n_maps:
                k = min(n_maps - s, x.shape[0])
                roll = metrics.attention_rollout([a[:k] for a in attns])
                maps.append(metrics.rollout_to_patches(roll, prefix, res.grid))
    if "distance" in parts:
        res.distance = torch.cat(dists)
        res.uniform_distance = metrics.uniform_attention_distance(res.grid, res.token_px)
    if n_maps:
        res.maps = torch.cat(maps)[:n_maps]
        res.map_images, res.map_labels, res.map_indices = imgs[:n_maps], labels[:n_maps], idx[:n_maps]
