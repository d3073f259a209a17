"""What the benchmarks feed a model: random batches shaped as SQuAD's, and real
questions of SQuAD 1.1 dev."""

import json
from pathlib import Path

import numpy as np

QUESTION_TOKENS = 20  # a padded batch's question, token type 0


def random_batch(
    batch_size: int,
    seq_len: int,
    ids: tuple[int, int] = (1000, 2000),
    *,
    seed: int = 0,
    micro_batches: int | None = 1,
    shortest: int | None = None,
) -> dict[str, np.ndarray]:
    """A batch shaped as `jaxqa.train` feeds its step, int32: token ids drawn from
    [ids[0], ids[1]), mask and types (A, B / A, T) and start/end labels (A, B / A),
    A = `micro_batches`; (B, T) and (B,) where that is None (one forward, or
    PyTorch). Speed does not depend on the values, so by default every token is
    real and of type 0 and the labels fall anywhere; with `shortest`, each
    window's real length is drawn from [shortest, T], its first 20 tokens are
    the question (type 0), the rest the context (type 1) with the labels in it,
    and padding (id 0) follows, as in SQuAD."""
    rng = np.random.default_rng(seed)
    if shortest is None:
        real = np.ones((batch_size, seq_len), bool)  # (B, T)
        input_ids = rng.integers(*ids, (batch_size, seq_len))
        types = np.zeros_like(real)
        starts, ends = rng.integers(0, seq_len, batch_size), rng.integers(0, seq_len, batch_size)
    else:
        lengths = rng.integers(shortest, seq_len + 1, batch_size)  # (B,)
        positions = np.arange(seq_len)[None, :]  # (1, T)
        real = positions < lengths[:, None]  # (B, T)
        input_ids = np.where(real, rng.integers(*ids, (batch_size, seq_len)), 0)
        types = real & (positions >= QUESTION_TOKENS)
        starts, ends = rng.integers(QUESTION_TOKENS, lengths), rng.integers(QUESTION_TOKENS, lengths)
    batch = {
        "input_ids": input_ids,
        "attention_mask": real,
        "token_type_ids": types,
        "start_positions": starts,
        "end_positions": ends,
    }
    rows = (batch_size,) if micro_batches is None else (micro_batches, batch_size // micro_batches)
    return {key: value.astype(np.int32).reshape(*rows, *value.shape[1:]) for key, value in batch.items()}


def squad_questions(path: Path, count: int) -> list[dict]:
    """The first question of `count` evenly spaced paragraphs of the SQuAD file
    `path`, as {"question", "context"}: context lengths vary as SQuAD's do."""
    articles = json.loads(path.read_text(encoding="utf-8"))["data"]
    paragraphs = [p for article in articles for p in article["paragraphs"]]
    chosen = np.linspace(0, len(paragraphs) - 1, count).round().astype(int)
    return [{"question": paragraphs[i]["qas"][0]["question"], "context": paragraphs[i]["context"]} for i in chosen]
