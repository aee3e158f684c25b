"""Token ids of sentences for BERT encoders, with a Hugging Face ``tokenizer.json`` through
the ``tokenizers`` package (extra ``minilm``): ``[CLS] tokens [SEP]``, truncated to
``max_length`` tokens, right-padded with the tokenizer's pad token to the longest
sentence given (docs/method.md#bert-encoders)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import DataError

__all__ = ["MAX_TOKENS", "tokenize"]

MAX_TOKENS = 128


def tokenize(sentences: Sequence[str], tokenizer_json: "str | Path", max_length: int = MAX_TOKENS,
             extra: str = "minilm") -> dict[str, np.ndarray]:
    """``input_ids``, ``attention_mask`` (1 on tokens, 0 on padding) and
    ``token_type_ids`` (the tokenizer's segment ids: 0 for one sentence), int64 arrays (N, T) with T the longest
    tokenised sentence (at most ``max_length``)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise DataError(f"Tokenising sentences needs the optional package tokenizers: pip install 'mixacc[{extra}]'.") \
            from None
    if not sentences:
        raise DataError("No sentences to tokenise.")
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_json))
    except Exception as exc:  # the Rust library raises its own exception type
        raise DataError(f"{tokenizer_json}: not a readable tokenizer ({str(exc).splitlines()[0]}).") from None
    pad = dict(tokenizer.padding or {})
    tokenizer.no_padding()
    tokenizer.enable_truncation(int(max_length))
    tokenizer.enable_padding(direction="right", pad_id=int(pad.get("pad_id", 0)),
                             pad_type_id=int(pad.get("pad_type_id", 0)), pad_token=str(pad.get("pad_token", "[PAD]")))
    encodings = tokenizer.encode_batch(list(sentences))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }
