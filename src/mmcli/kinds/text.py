"""The text kind: a string per cell, kept as text in the cache and turned into token ids
by a tokenizer fitted on the training split (or a pretrained model's); cut to the longest
text of each batch. Its encoder, where the config names none, is chosen from the training
texts' lengths (`defaults_from_data`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmcli import kinds

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from mmcli.config import Config, DataConfig, ModalityConfig
    from mmcli.data.table import Table
    from mmcli.encoders import ModalitySpec
    from mmcli.pipeline import RunData

SHORT_TEXT_TOKENS = 8  # a median at most this long: names, titles, tags, keywords (not sentences)


@kinds.register
class Text(kinds.ModalityKind):
    name = "text"
    about = "a text per cell (any column that is neither files nor numbers)"
    fallback = True
    default_encoder = "transformer"
    old_default_encoder = "textcnn"
    corruptions = ("typos", "word_dropout", "word_shuffle")
    padded_to_batch = True
    zero_missing = False  # an absent text is all padding ids, which the encoders mask
    fitted = "tokenizer"
    tokenized = True
    caption_target = True
    predict_option = ("--text", "One example: its text.")
    query_help = "Retrieval runs: find the items of --index nearest to this text (repeatable)."
    value_type = str


    def export_recipe(self, run: Any, name: str, folder: Path) -> dict[str, Any] | None:
        from mmcli.export.recipes import text_recipe

        return text_recipe(run, name, folder)
    def texts(self, rows: list[dict[str, str]], m: ModalityConfig) -> list | None:
        return [r[m.column] for r in rows]

    def texts_problem(self, name: str, texts: object, n: int, m: dict) -> str | None:
        ok = isinstance(texts, list) and len(texts) == n and all(isinstance(t, str) for t in texts)
        return None if ok else f"texts of '{name}' must be {n} texts, one per id"

    def fit(self, config: Config, name: str, m: ModalityConfig, texts: list) -> Any:
        from mmcli.data import lengths
        from mmcli.data import text as text_mod

        max_len = config.data.text_max_len or lengths.TOKENS[1]  # unset: derived once fitted (finish_fit)
        brought = brought_tokenizer(config, name)
        if brought is not None:  # an encoder with a tokenizer of its own (OpenCLIP's)
            return brought[0](brought[1], max_len)
        model = pretrained_model(config, name)
        if model is not None:
            return text_mod.pretrained_tokenizer(model, max_len)
        return text_mod.fit_tokenizer(texts, config.data.vocab_size, max_len)

    def finish_fit(self, config: Config, fitted: dict[str, Any], present: dict[str, list]) -> None:
        """An unset data.text_max_len is derived from every text modality's training texts
        (a new text's unseen word is one token, as a training word is)."""
        from mmcli.data import lengths

        lengths.resolve_tokens(config.data, fitted, present)

    def fit_key(self, config: Config, name: str) -> str | None:
        if brought_tokenizer(config, name) is not None:  # its model: the encoder's backbone_config
            return super().spec_extra(config, name, None).get("backbone_config")
        return pretrained_model(config, name)

    def load_fitted(self, path: Path, config: Config, spec: ModalitySpec, source: ModalityConfig) -> Any:
        from mmcli.data import text as text_mod

        max_len = config.data.text_max_len
        assert max_len is not None  # a saved run's config has it derived
        tokenizer = text_mod.load_tokenizer(path, max_len, pretrained=spec.tokenizer == "pretrained")
        _check_vocab(path, tokenizer, spec)
        return tokenizer

    def spec_extra(self, config: Config, name: str, fitted: Any) -> dict[str, Any]:
        extra: dict[str, Any] = {"vocab_size": fitted.get_vocab_size()}
        if brought_tokenizer(config, name) is not None:  # with the model's config: the encoder's backbone_config
            return extra | {"tokenizer": "pretrained", **super().spec_extra(config, name, fitted)}
        model = pretrained_model(config, name)
        if model is not None:
            from mmcli.encoders.pretrained_text import model_config_json

            extra |= {"tokenizer": "pretrained", "backbone_config": model_config_json(model)}
        return extra

    def encode(self, table: Table, name: str, fitted: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        return _ids(fitted, table.texts[name])

    def show(self, table: Table, name: str, row: int) -> Any:
        return str(table.texts[name][row])

    def derived_limit(self, config: DataConfig) -> bool:
        return config.text_max_len is None

    def cut(self, config: Config, table: Table, name: str, rows: list[int], fitted: Any) -> tuple[int, str] | None:
        if not hasattr(fitted, "encode_batch"):
            return None
        encodings = fitted.encode_batch([table.texts[name][i] for i in rows])
        return sum(bool(e.overflowing) for e in encodings), f"data.text_max_len={config.data.text_max_len} tokens"

    def defaults_from_data(self, config: Config, data: RunData, names: list[str], log: Any) -> None:
        """`bag` for a text modality whose training texts are short, a median of at most
        SHORT_TEXT_TOKENS tokens, else `transformer` (issue 19).

        The words of a name or a title carry its meaning; a Transformer trained from scratch
        on a few thousand of them memorises them instead. On mdi-icons' names (median 3
        tokens) the bag scored 85.7 % against 84.7 % alone and lifted every fusion by
        0.6-1.0 points. On COCO captions (median 11) it was better alone (48.9 against
        46.0 %) but its fused models fell 6-10 points below the Transformer's, so sentences
        keep the Transformer (5 seeds each; docs/results.md#short-texts)."""
        import numpy as np

        from mmcli.data import text as text_mod

        train = [i for i, s in enumerate(data.splits) if s == "train"]
        for name in names:
            mask = data.table.present.get(name)
            present = [data.table.texts[name][i] for i in train if mask is None or bool(mask[i])]
            counts = text_mod.token_counts(data.tokenizers[name], present) if present else []
            median = float(np.median(counts)) if counts else float("inf")
            config.model.encoders[name] = "bag" if median <= SHORT_TEXT_TOKENS else "transformer"
            if log:
                log.info("model.encoders.%s=%s (the training texts of '%s' have a median of %s tokens, %s %d; "
                         "--set model.encoders.%s=NAME chooses another)", name, config.model.encoders[name], name,
                         f"{median:g}" if counts else "no", "at most" if median <= SHORT_TEXT_TOKENS else "over",
                         SHORT_TEXT_TOKENS, name)

    def corrupt(self, table: Table, name: str, what: str, level: float, seed: int) -> None:
        from mmcli.evaluation.corrupt import corrupt_texts

        table.texts[name] = corrupt_texts(table.texts[name], what, level, seed)

    def stack(self, values: list[Any], spec: ModalitySpec, fitted: Any, config: DataConfig
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return _ids(fitted, ["" if v is None else v for v in values])


def _ids(tokenizer: Any, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    from mmcli.data import text as text_mod

    ids = text_mod.encode(tokenizer, texts)
    return ids, (ids != 0).sum(dim=1).clamp(min=1)


def pretrained_model(config: Config, name: str) -> str | None:
    """The Hugging Face model whose tokenizer a text modality must use, if any."""
    from mmcli.encoders import ENCODERS, ModalitySpec
    from mmcli.models import encoder_choice

    encoder, options = encoder_choice(config, ModalitySpec(name=name, kind=Text.name))
    if encoder in ENCODERS and "weights:hf" in ENCODERS.entry(encoder).tags:
        return str(options.get("model") or "") or None
    return None


def brought_tokenizer(config: Config, name: str) -> tuple[Any, dict[str, Any]] | None:
    """Where the chosen encoder brings a tokenizer of its own (OpenCLIP's), its
    `tokenizer(options, max_len)` and options (its `backbone_config(options)` goes with it), else None."""
    from mmcli.encoders import chosen_hook

    return chosen_hook(config, name, Text.name, "tokenizer")


def _check_vocab(path: Path, tokenizer: Any, spec: ModalitySpec) -> None:
    """Every id the tokenizer can give must index the text encoder's embedding."""
    from mmcli.data import text as text_mod
    from mmcli.runfiles import damaged

    inner = getattr(tokenizer, "tokenizer", tokenizer)
    shift = 1 if getattr(tokenizer, "pretrained", False) else 0
    size = tokenizer.get_vocab_size()
    top = max(inner.get_vocab(with_added_tokens=True).values(), default=0) + shift
    try:
        probe = int(text_mod.encode(tokenizer, ["Probe: a 2nd TEXT, ünïcode & [UNK] [PAD]!"]).max())
    except BaseException as exc:  # a Rust panic is a BaseException
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        raise damaged(path, f"cannot encode a text ({str(exc)[:120]})") from None
    if size != spec.vocab_size or max(top, probe) >= spec.vocab_size:
        raise damaged(path, f"gives ids up to {max(top, probe)} ({size} tokens); the text encoder's embedding in "
                            f"data.json has {spec.vocab_size}")

