"""`image.openclip` and `text.openclip`: the two towers of an OpenCLIP model (Ilharco et
al., 2021; Cherti et al., 2023, "Reproducible scaling laws for contrastive language-image
learning"), from a local checkpoint, behind the optional extra `mmcli[openclip]`.

`model` is an OpenCLIP architecture (`ViT-B-32`, one of `open_clip.list_models()`) or a JSON
model config (OpenCLIP's own format: embed_dim, vision_cfg, text_cfg; or an
open_clip_config.json with model_cfg and preprocess_cfg); `weights` a checkpoint file
(.pt, .pth, .bin, .safetensors) as OpenCLIP saves or publishes them. Nothing is ever
downloaded: without a file, `data_settings` (asked before any data is decoded) fails at
once, without importing open_clip, with where to put one; `pretrained: false` builds
random weights.

The pooled vector is the model's embedding, `encode_image` / `encode_text` before
normalisation (`project: true` adds a trained linear map to model.feature_dim); tokens are
the image patches (average-pooled to a 4x4 grid) or the text tokens, projected into the
same space. Images are read at the model's size and normalised with its mean and std
(OpenAI's unless the JSON config's preprocess_cfg says otherwise); texts go through
OpenCLIP's byte-level BPE, rebuilt as a Hugging Face `tokenizers` tokenizer
(`clip_tokenizer`) so that it is saved with the run as a pretrained model's is.
"""

from __future__ import annotations

import copy
import gzip
import importlib.util
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmcli.encoders import ENCODERS, Encoder, EncoderOutput, ModalitySpec, load_pretrained
from mmcli.errors import ConfigError

IMAGE, TEXT = "image.openclip", "text.openclip"
EXTRA_HINT = "OpenCLIP encoders need the optional extra: pip install 'mmcli[openclip]'"
CHECKPOINTS = (".pt", ".pth", ".bin", ".safetensors")
OPENAI_MEAN, OPENAI_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
TOKENS_GRID = 4
SOT, EOT = "<start_of_text>", "<end_of_text>"
SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""  # OpenCLIP's SimpleTokenizer's words


def package_dir() -> Path:
    """open_clip's folder, found without importing it (that takes seconds: timm, ...)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(EXTRA_HINT)
    return Path(list(spec.submodule_search_locations)[0])


def open_clip_module() -> Any:
    try:
        import open_clip
    except ImportError:
        raise ConfigError(EXTRA_HINT) from None
    return open_clip


def read_config(model: str, encoder: str) -> dict[str, Any]:
    """{"model_cfg": ..., "preprocess_cfg": ...} of an architecture name, a JSON file, or
    JSON text (as a run saves it)."""
    if not model:
        raise ConfigError(f"{encoder} needs the option model: an OpenCLIP architecture (ViT-B-32, ...) or a JSON model config")
    if model.lstrip().startswith("{"):
        values = json.loads(model)
    else:
        path = Path(model).expanduser()
        if not path.is_file() and path.suffix != ".json":
            path = package_dir() / "model_configs" / f"{model.replace('/', '-')}.json"
            if not path.is_file():
                raise ConfigError(f"model '{model}': neither an OpenCLIP architecture (the names of "
                                  "open_clip.list_models()) nor a JSON model config file")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model '{model}': cannot read the JSON model config ({exc})") from None
    values = values if isinstance(values, dict) else {}
    cfg = values.get("model_cfg", values)
    if not all(isinstance(cfg.get(k), dict) for k in ("vision_cfg", "text_cfg")) or "embed_dim" not in cfg:
        raise ConfigError(f"model '{model}': not an OpenCLIP model config (embed_dim, vision_cfg, text_cfg)")
    for key, hint in (("hf_model_name", "a Hugging Face text tower"), ("hf_tokenizer_name", "a Hugging Face tokenizer")):
        if key in cfg["text_cfg"]:
            raise ConfigError(f"model '{model}': {encoder} reads OpenCLIP's own CLIP text transformer and BPE, not {hint}")
    return {"model_cfg": cfg, "preprocess_cfg": values.get("preprocess_cfg") or {}}


def where_to_put(model: str, encoder: str) -> str:
    return (f"{encoder} never downloads: put the checkpoint of '{model}' (open_clip_model.safetensors or "
            "open_clip_pytorch_model.bin from its Hugging Face repository, e.g. on a machine with network "
            "`hf download laion/CLIP-ViT-B-32-laion2B-s34B-b79K open_clip_model.safetensors --local-dir DIR`, or a "
            f"file saved with torch.save(model.state_dict())) on this machine and pass it as "
            f"--set model.encoder_options.{encoder}.weights=PATH; or pretrained: false for random weights")


def checked_weights(model: str, weights: Any, pretrained: bool, encoder: str) -> str | None:
    """The checkpoint file to load (None: random weights), or a ConfigError at once."""
    if not pretrained or not load_pretrained():
        return None
    if not weights:
        raise ConfigError(f"model '{model}': no checkpoint file (option weights). {where_to_put(model, encoder)}")
    path = Path(str(weights)).expanduser()
    if not path.is_file():
        raise ConfigError(f"weights '{weights}': no such file. {where_to_put(model, encoder)}")
    if path.suffix not in CHECKPOINTS:
        raise ConfigError(f"weights '{weights}': a checkpoint is a {', '.join(CHECKPOINTS)} file")
    return str(path)


def build_clip(config: dict[str, Any], weights: str | None, model: str) -> Any:
    """The OpenCLIP model of `config` with the checkpoint's weights (or random ones)."""
    open_clip = open_clip_module()
    cfg = copy.deepcopy(config["model_cfg"])
    custom = bool(cfg.pop("custom_text", False))
    if "multimodal_cfg" in cfg:
        raise ConfigError(f"model '{model}': a CoCa model; the OpenCLIP encoders read CLIP models")
    if "timm_model_name" in cfg["vision_cfg"]:
        cfg["vision_cfg"]["timm_model_pretrained"] = False  # the checkpoint has the whole model: nothing to download
    clip = (open_clip.CustomTextCLIP if custom else open_clip.CLIP)(**cfg)
    if weights is not None:
        try:
            open_clip.load_checkpoint(clip, weights)
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"weights '{weights}': not a checkpoint of '{model}' ({str(exc)[:300]})") from None
    return clip


def image_settings(config: dict[str, Any], model: str) -> dict[str, Any]:
    size = config["model_cfg"]["vision_cfg"].get("image_size", 224)
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ConfigError(f"model '{model}': reads {size[0]}x{size[1]} images; mmcli stores square ones")
        size = size[0]
    pre = config["preprocess_cfg"]
    mean, std = pre.get("mean") or OPENAI_MEAN, pre.get("std") or OPENAI_STD
    return {"image_size": int(size), "image_mean": [float(v) for v in mean], "image_std": [float(v) for v in std]}


def _options(options: dict[str, Any], encoder: str) -> tuple[str, dict[str, Any], str | None]:
    model = str(options.get("model") or "")
    config = read_config(model, encoder)
    return model, config, checked_weights(model, options.get("weights"), options.get("pretrained", True) is not False, encoder)


SAVED = "openclip"  # the model_type of the model config a run keeps in its data.json (backbone_config)


def run_config(backbone_config: str, model: str, encoder: str) -> dict[str, Any]:
    """The model config: the run's own copy where it kept one, else read from `model`."""
    saved = json.loads(backbone_config) if backbone_config else None
    return saved if isinstance(saved, dict) and saved.get("model_type") == SAVED else read_config(model, encoder)


class OpenCLIPImage(Encoder):
    """The model's image tower (`visual`); its residual blocks are the blocks of `trainable: N`."""

    def __init__(self, spec: ModalitySpec, out_dim: int, model: str = "", weights: str | None = None,
                 pretrained: bool = True, project: bool = False, **_: object):
        super().__init__()
        config = run_config(spec.backbone_config, model, IMAGE)
        self.visual: Any = build_clip(config, checked_weights(model, weights, pretrained, IMAGE), model).visual
        self.size = image_settings(config, model)["image_size"]
        if hasattr(self.visual, "output_tokens"):
            self.visual.output_tokens = True
        self.pool_grid = nn.AdaptiveAvgPool2d(TOKENS_GRID)
        embed = int(config["model_cfg"]["embed_dim"])
        self.proj = nn.Linear(embed, out_dim) if project else nn.Identity()
        self.out_dim = out_dim if project else embed
        self.trained_parts = ("visual.",) if pretrained else ()

    @staticmethod
    def data_settings(options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The model's image size and normalisation; a ConfigError at once, before any image is
        decoded, where the model or its checkpoint cannot be found."""
        model, config, _ = _options(options, IMAGE)
        return IMAGE, image_settings(config, model)

    @staticmethod
    def backbone_config(options: dict[str, Any]) -> str:
        """The model config, kept in the run's data.json so the run rebuilds without the file."""
        return json.dumps({"model_type": SAVED, **read_config(str(options.get("model") or ""), IMAGE)})

    def blocks(self) -> list[nn.Module]:
        stack = getattr(getattr(self.visual, "transformer", None), "resblocks", None)
        return list(stack) if stack is not None else [self.visual]

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        if x.shape[-2:] != (self.size, self.size):
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        out = self.visual(x)
        pooled, tokens = out if isinstance(out, tuple) else (out, None)
        parts = [pooled.unsqueeze(1)]
        proj = getattr(self.visual, "proj", None)
        if tokens is not None and tokens.dim() == 3 and isinstance(proj, torch.Tensor):
            side = int(round(tokens.shape[1] ** 0.5))
            if side * side == tokens.shape[1]:
                grid = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)
                tokens = self.pool_grid(grid).flatten(2).transpose(1, 2)
            parts.append(tokens @ proj)
        raw = torch.cat(parts, dim=1)
        return raw, torch.ones(raw.shape[:2], dtype=torch.bool, device=x.device)

    def from_features(self, raw, mask) -> EncoderOutput:
        tokens = self.proj(raw)  # token 0 is the model's embedding
        return EncoderOutput(tokens[:, 0], tokens, mask)


class TextTower(nn.Module):
    """CLIP's text half: `encode_text`, with the projected tokens as well."""

    def __init__(self, clip: Any):
        super().__init__()
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
        self.pool_type, self.eos_id = clip.text_pool_type, getattr(clip, "text_eos_id", None)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        if self.text_projection is None:
            return x
        return self.text_projection(x) if isinstance(self.text_projection, nn.Linear) else x @ self.text_projection

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from open_clip.transformer import text_global_pool

        x = self.token_embedding(ids) + self.positional_embedding.to(self.token_embedding.weight.dtype)
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask))
        pooled = text_global_pool(x, ids, self.pool_type, eos_token_id=self.eos_id)
        return self._project(pooled), self._project(x)


class OpenCLIPText(Encoder):
    """The model's text tower, reading ids of OpenCLIP's BPE (shifted by one, 0 = padding)."""

    def __init__(self, spec: ModalitySpec, out_dim: int, model: str = "", weights: str | None = None,
                 pretrained: bool = True, project: bool = False, **_: object):
        super().__init__()
        config = run_config(spec.backbone_config, model, TEXT)
        clip = build_clip(config, checked_weights(model, weights, pretrained, TEXT), model)
        if not hasattr(clip, "token_embedding"):
            raise ConfigError(f"model '{model}': {TEXT} reads CLIP's own text transformer (custom_text: false)")
        self.context = int(config["model_cfg"]["text_cfg"].get("context_length", 77))
        if spec.max_len > self.context:
            raise ConfigError(f"data.text_max_len is {spec.max_len}; model '{model}' reads at most {self.context} tokens")
        self.tower = TextTower(clip)
        embed = int(config["model_cfg"]["embed_dim"])
        self.proj = nn.Linear(embed, out_dim) if project else nn.Identity()
        self.out_dim = out_dim if project else embed
        self.trained_parts = ("tower.",) if pretrained else ()

    @staticmethod
    def data_settings(options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The model's context length as data.text_max_len; a ConfigError at once, before any
        text is read, where the model or its checkpoint cannot be found."""
        _, config, _ = _options(options, TEXT)
        return TEXT, {"text_max_len": int(config["model_cfg"]["text_cfg"].get("context_length", 77))}

    @staticmethod
    def tokenizer(options: dict[str, Any], max_len: int) -> Any:
        """OpenCLIP's tokenizer, as the text kind keeps a pretrained model's (mmcli.kinds.text)."""
        from mmcli.data.text import PretrainedTokenizer

        config = read_config(str(options.get("model") or ""), TEXT)
        return PretrainedTokenizer(clip_tokenizer(int(config["model_cfg"]["text_cfg"].get("vocab_size", 49408))), max_len)

    @staticmethod
    def backbone_config(options: dict[str, Any]) -> str:
        """The model config, kept in the run's data.json so the run rebuilds without the file."""
        return json.dumps({"model_type": SAVED, **read_config(str(options.get("model") or ""), TEXT)})

    def blocks(self) -> list[nn.Module]:
        return list(self.tower.transformer.resblocks)

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        real = x != 0
        ids = (x - 1).clamp(min=0)  # OpenCLIP pads with 0 too
        n = ids.shape[1]
        if bool(real[:, self.context:].any()):
            raise ValueError(f"{TEXT}: texts of {n} tokens; the model reads at most {self.context}")
        ids = nn.functional.pad(ids, (0, self.context - n)) if n < self.context else ids[:, :self.context]
        pooled, tokens = self.tower(ids)
        tokens = nn.functional.pad(tokens, (0, 0, 0, n - self.context)) if n > self.context else tokens[:, :n]
        raw = torch.cat([pooled.unsqueeze(1), tokens], dim=1)  # the embedding first: cached with the tokens
        return raw, torch.cat([torch.ones_like(real[:, :1]), real], dim=1)

    def from_features(self, raw, mask) -> EncoderOutput:
        out = self.proj(raw)
        return EncoderOutput(out[:, 0], out[:, 1:], mask[:, 1:])


def clip_tokenizer(vocab_size: int = 49408) -> Any:
    """OpenCLIP's SimpleTokenizer (lower case, its word pattern, byte-level BPE with `</w>`
    ends, <start_of_text> ... <end_of_text>, padding 0) as a `tokenizers` Tokenizer built
    from open_clip's own merges file. It does not run ftfy and html.unescape first: texts
    with mojibake or HTML entities may split differently."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    lines = gzip.open(package_dir() / "bpe_simple_vocab_16e6.txt.gz").read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    byte_chars = _bytes_to_unicode()
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [SOT, EOT]
    if len(vocab) > vocab_size:
        raise ConfigError(f"the OpenCLIP model's vocab_size {vocab_size} is smaller than its tokenizer's {len(vocab)}")
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(vocab)}, merges=[(a, b) for a, b in merges],
                                     end_of_word_suffix="</w>", continuing_subword_prefix="", fuse_unk=False))
    tokenizer.add_special_tokens([SOT, EOT])
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                                 normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}", special_tokens=[(SOT, len(vocab) - 2), (EOT, len(vocab) - 1)])
    tokenizer.enable_padding(pad_id=0, pad_token=vocab[0])
    return tokenizer


def _bytes_to_unicode() -> list[str]:
    """GPT-2's printable stand-in for each byte, in OpenCLIP's order (its vocabulary's first 256)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


ENCODERS.register(IMAGE, "OpenCLIP image tower from a local checkpoint (model: ARCH|JSON, weights: FILE; needs mmcli[openclip])",
                  tags=("image", "weights:openclip"))(OpenCLIPImage)
ENCODERS.register(TEXT, "OpenCLIP text tower with its BPE tokenizer (model: ARCH|JSON, weights: FILE; needs mmcli[openclip])",
                  tags=("text", "weights:openclip"))(OpenCLIPText)
