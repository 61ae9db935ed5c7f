"""Pretrained Hugging Face text encoders (BERT-like models, sentence-transformers
folders) by model name or local folder, behind the optional extra `mmcli[hf]`.

`transformers` is imported only when such an encoder is built. The model's own tokenizer
goes with it (`mmcli.data.text.pretrained_tokenizer`); token ids arrive shifted by one so
that 0 still means padding whatever the model's pad id (`unshift`). Tokens are the last
hidden states; the pooled vector is their mean over real tokens, as sentence-transformers
pools. `pretrained: false` builds the same architecture with random weights. Finding the
model, offline too, is `pretrained_hf.resolve_model`'s.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from mmcli.encoders import ENCODERS, Encoder, ModalitySpec, load_pretrained
from mmcli.encoders.pretrained_hf import resolve_model, transformers_module
from mmcli.errors import ConfigError


def model_config_json(model: str) -> str:
    """The model's architecture config as JSON (kept in the run folder's data.json)."""
    transformers = transformers_module()
    try:
        config = transformers.AutoConfig.from_pretrained(resolve_model(model, "text.hf"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model '{model}': not a Hugging Face model folder or a name that can be downloaded ({exc})") from None
    return config.to_json_string(use_diff=False)


def unshift(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifted ids (0 = padding, id + 1 otherwise) -> the model's ids and attention mask."""
    mask = x != 0
    return (x - 1).clamp(min=0), mask


class HFText(Encoder):
    """A Hugging Face transformer encoder; its layers are the blocks for `trainable: N`."""

    def __init__(self, spec: ModalitySpec, out_dim: int, model: str = "", pretrained: bool = True, **_: object):
        super().__init__()
        if not model:
            raise ValueError("text.hf needs the option model: a Hugging Face model name or a local folder")
        transformers = transformers_module()
        if load_pretrained() and pretrained:
            try:
                self.backbone = transformers.AutoModel.from_pretrained(resolve_model(model, "text.hf"))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"model '{model}': cannot load ({exc})") from None
        else:
            config = _config(transformers, spec.backbone_config or model_config_json(model))
            self.backbone = transformers.AutoModel.from_config(config)
        self.proj = nn.Linear(self.backbone.config.hidden_size, out_dim)
        self.out_dim = out_dim
        self.trained_parts = ("backbone.",) if pretrained else ()

    @staticmethod
    def data_settings(options: dict[str, Any]) -> None:
        """No data settings; a ConfigError at once, before any text is read, where the model
        cannot be found (`mmcli.encoders.pretrained_hf.resolve_model`)."""
        resolve_model(str(options.get("model") or ""), "text.hf")

    def blocks(self) -> list[nn.Module]:
        lists = [m for m in self.backbone.modules() if isinstance(m, nn.ModuleList)]
        longest: Any = max(lists, key=len) if lists else [self.backbone]  # the stack of layers
        return list(longest)

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        ids, mask = unshift(x)
        attend = mask.clone()
        attend[:, 0] = True  # a missing text still has one place to attend to; the mask hides it
        hidden = self.backbone(input_ids=ids, attention_mask=attend.long()).last_hidden_state
        return hidden * mask.unsqueeze(-1), mask


def _config(transformers, text: str) -> Any:
    values = json.loads(text)
    return transformers.AutoConfig.for_model(values.pop("model_type"), **values)


ENCODERS.register("text.hf", "pretrained Hugging Face / sentence-transformers encoder (needs mmcli[hf])",
                  tags=("text", "weights:hf"))(HFText)
