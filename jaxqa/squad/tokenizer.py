"""The fast (Rust) WordPiece tokenizer of a BERT-family checkpoint folder.

A folder saved by Hugging Face carries `tokenizer.json`, which is used as is. Older
checkpoints carry only `vocab.txt` and `tokenizer_config.json`; for those the BERT
tokenizer is rebuilt from its parts, the way `transformers` converts its Python BERT
tokenizer into a fast one, so that both kinds of folder tokenize identically.
"""

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from jaxqa.errors import Error

# The files of a checkpoint folder that make its tokenizer, copied with every checkpoint.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


class TokenizerError(Error):
    """A folder without a usable tokenizer; the message names it."""


def load_tokenizer(folder: str | Path, vocab_size: int | None = None) -> Tokenizer:
    """Returns the folder's tokenizer with padding and truncation turned off,
    after refusing one whose ids reach past a model's `vocab_size` (its
    embeddings would read nothing there, and every logit would be NaN).

    Saved tokenizers often carry the padding and truncation of their last use
    (all-MiniLM-L6-v2 pads and truncates to 128); callers set their own.
    """
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    elif (folder / "vocab.txt").is_file():
        tokenizer = _bert_from_vocab(folder / "vocab.txt", _read_config(folder))
    else:
        raise TokenizerError(f"{folder}: no tokenizer.json or vocab.txt, so no tokenizer can be loaded")
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if vocab_size is not None and size > vocab_size:
        raise TokenizerError(
            f"{folder}: the tokenizer has {size} tokens, more than the model's vocabulary of {vocab_size} (vocab_size)"
        )
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _read_config(folder: Path) -> dict:
    path = folder / "tokenizer_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _token(config: dict, key: str, default: str) -> str:
    # Old configs store special tokens as serialised AddedToken objects.
    value = config.get(key) or default
    return value["content"] if isinstance(value, dict) else value


def _bert_from_vocab(vocab_path: Path, config: dict) -> Tokenizer:
    unk = _token(config, "unk_token", "[UNK]")
    cls = _token(config, "cls_token", "[CLS]")
    sep = _token(config, "sep_token", "[SEP]")
    pad = _token(config, "pad_token", "[PAD]")
    mask = _token(config, "mask_token", "[MASK]")
    tokenizer = Tokenizer(models.WordPiece.from_file(str(vocab_path), unk_token=unk))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=config.get("tokenize_chinese_chars", True),
        # None means "strip accents when lower-casing", as in BERT's own tokenizer.
        strip_accents=config.get("strip_accents"),
        lowercase=config.get("do_lower_case", True),
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    for token in (unk, cls, sep):
        if tokenizer.token_to_id(token) is None:
            raise TokenizerError(f"{vocab_path}: special token {token!r} is not in the vocabulary")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    # Special tokens written in the text stay whole, as with tokenizer.json.
    tokenizer.add_special_tokens([t for t in (pad, unk, cls, sep, mask) if tokenizer.token_to_id(t) is not None])
    return tokenizer
