"""What the pretrained Hugging Face encoders share (`text.hf`, `image.hf`, `audio.hf`):
finding a model without waiting on the network, loading its config, its tower and its
preprocessor settings.

A model is a local folder (with its config.json) or a Hub name. A Hub name that is not in
the Hugging Face cache needs the Hub, and without network transformers retries for about
30 s before it gives up; `resolve_model` instead asks once, with a short timeout, whether
the Hub can be reached, and fails at once with where a model can be put. Where it cannot
be reached, the process goes offline (HF_HUB_OFFLINE) so that a cached model loads
without any request. The encoders' `data_settings` call it before any data is decoded
(`mmcli.encoders.encoder_data_settings`).
"""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mmcli.errors import ConfigError

EXTRA_HINT = "pretrained Hugging Face encoders need the optional extra: pip install 'mmcli[hf]'"
PROBE_SECONDS = 0.75  # how long the network may take to answer one connection, DNS included


def transformers_module():
    try:
        import transformers
    except ImportError:
        raise ConfigError(EXTRA_HINT) from None
    transformers.logging.set_verbosity_error()  # its warnings about unused pooler weights are noise here
    return transformers


@functools.lru_cache(maxsize=None)
def reachable(host: str, port: int) -> bool:
    """A TCP connection to host:port opens within PROBE_SECONDS. The name lookup runs in a
    thread too: getaddrinfo has no timeout of its own."""
    answer: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=PROBE_SECONDS):
                answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(PROBE_SECONDS)
    return bool(answer and answer[0])


def url_reachable(url: str) -> bool:
    """The server of `url` (or the proxy that the environment names for it) answers."""
    import urllib.request

    target = urlparse(url)
    proxy = urllib.request.getproxies().get(target.scheme)
    if proxy and not urllib.request.proxy_bypass(target.hostname or ""):
        target = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    if not target.hostname:
        return False
    return reachable(target.hostname, target.port or (443 if target.scheme == "https" else 80))


def go_offline() -> None:
    """No more requests to the Hub from this process and the processes it starts."""
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True  # read at each call by huggingface_hub and transformers


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") > 1 or model.endswith("/")


def where_to_put(model: str) -> str:
    from huggingface_hub import constants

    return (f"put the model in a folder and pass it as model: PATH (on a machine with network: "
            f"`hf download {model} --local-dir DIR`, or save_pretrained(DIR)), or copy its cache entry "
            f"(models--{model.replace('/', '--')}) into the Hugging Face cache, {constants.HF_HUB_CACHE} ($HF_HOME/hub)")


def resolve_model(model: str, encoder: str) -> str:
    """`model` as transformers should load it: a local folder, or a Hub name that is cached
    or can be downloaded now. Otherwise a ConfigError within a second, saying where to put it."""
    if not model:
        raise ConfigError(f"{encoder} needs the option model: a Hugging Face model name or a local folder")
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model '{model}': the folder has no config.json (a model saved with save_pretrained, "
                              "or downloaded with `hf download NAME --local-dir DIR`)")
        return str(path)
    if path.exists() or _looks_like_path(model):
        raise ConfigError(f"model '{model}': no such model folder")
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        cached = isinstance(try_to_load_from_cache(model, "config.json"), str)
    except ValueError:  # HFValidationError: not a repository id
        raise ConfigError(f"model '{model}': neither a model folder nor a Hugging Face model name") from None
    if constants.HF_HUB_OFFLINE or not url_reachable(constants.ENDPOINT):
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"{constants.ENDPOINT} cannot be reached"
        go_offline()
        if not cached:
            raise ConfigError(f"model '{model}': not a local folder, not in the Hugging Face cache, and {why}: "
                              f"{where_to_put(model)}")
    return model


def load_config(model: str, encoder: str) -> Any:
    """The model's transformers config (`model` resolved, or config JSON as a run saves it)."""
    transformers = transformers_module()
    if model.lstrip().startswith("{"):
        values = json.loads(model)
        return transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    try:
        return transformers.AutoConfig.from_pretrained(resolve_model(model, encoder))
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"model '{model}': cannot read its config ({exc})") from None


SAVED_PROCESSOR = "mmcli_preprocessor"  # the preprocessor config, inside a saved run's copy of the model config


def saved_config(model: str, encoder: str) -> str:
    """The model's config as JSON, its preprocessor config under SAVED_PROCESSOR: kept in the
    run's data.json (ModalitySpec.backbone_config), so that a saved run rebuilds the tower,
    whose weights it holds, without the model's files (moved, deleted, another machine)."""
    model = resolve_model(model, encoder)
    values = load_config(model, encoder).to_dict()
    values[SAVED_PROCESSOR] = preprocessor_config(model)
    return json.dumps(values)


def tower_config(backbone_config: str, model: str, encoder: str) -> tuple[Any, dict[str, Any], str]:
    """(the model's config, its preprocessor config, where its weights are): from the run's
    saved copy (`backbone_config`, a spec's) where there is one, else from the model's files;
    the model is looked up only where its weights will be loaded."""
    from mmcli.encoders import load_pretrained

    if not backbone_config:
        model = resolve_model(model, encoder)
        return load_config(model, encoder), preprocessor_config(model), model
    values = json.loads(backbone_config)
    processor = values.pop(SAVED_PROCESSOR, None)
    where = resolve_model(model, encoder) if load_pretrained() else model
    return load_config(json.dumps(values), encoder), processor if isinstance(processor, dict) else {}, where


def preprocessor_config(model: str) -> dict[str, Any]:
    """The model's preprocessor_config.json ({} where it has none)."""
    path = Path(model).expanduser() / "preprocessor_config.json"
    if not path.is_file() and not Path(model).expanduser().is_dir():
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(model, "preprocessor_config.json"))
        except (OSError, ValueError):  # not in the repository, or not cached offline
            return {}
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return values if isinstance(values, dict) else {}


def load_tower(model: str, config: Any, pretrained: bool) -> Any:
    """The transformers module for `config` (a sub-config of a dual model, such as CLIP's
    vision tower, loads that tower alone): the model's weights, or random ones; the
    encoder of an encoder-decoder model (Whisper)."""
    import torch

    from mmcli.encoders import load_pretrained

    transformers = transformers_module()
    if load_pretrained() and pretrained:
        try:
            tower = transformers.MODEL_MAPPING[type(config)].from_pretrained(model, dtype=torch.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"model '{model}': cannot load ({exc})") from None
    else:
        tower = transformers.AutoModel.from_config(config)
    if getattr(tower.config, "is_encoder_decoder", False):
        tower = tower.get_encoder()
    return tower


def layer_stack(backbone: Any) -> list[Any]:
    """A transformer's layers (its longest ModuleList), the blocks for `trainable: N`."""
    from torch import nn

    lists: list[Any] = [m for m in backbone.modules() if isinstance(m, nn.ModuleList)]
    longest: Any = max(lists, key=len) if lists else [backbone]
    return list(longest)
