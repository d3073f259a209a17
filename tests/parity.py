"""Shared harness of the PyTorch parity tests.

A random-initialised `transformers` model is saved with `save_pretrained`,
converted by `convert/pt2flax.py`, loaded with `jaxqa.load_pretrained`, and both
are fed the same batch (padded rows, both token types).
"""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import safe_open

torch = pytest.importorskip("torch", reason="parity tests need torch (pip install 'jaxqa[torch]')")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers==5.2.0")


import jaxqa  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _cli(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "convert" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pt2flax = _cli("pt2flax")
flax2pt = _cli("flax2pt")


def random_batch(vocab_size: int, batch: int = 3, length: int = 24, seed: int = 0):
    """int32 (B, T) arrays: row b has `length - 5 * b` real tokens, then padding;
    the second half of the real tokens has token type 1."""
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(1, vocab_size, size=(batch, length)).astype(np.int32)
    attention_mask = np.zeros((batch, length), np.int32)
    token_type_ids = np.zeros((batch, length), np.int32)
    for b in range(batch):
        real = length - 5 * b
        attention_mask[b, :real] = 1
        token_type_ids[b, real // 2 : real] = 1
    input_ids = np.where(attention_mask == 1, input_ids, 0).astype(np.int32)
    return input_ids, attention_mask, token_type_ids


def torch_logits(model, batch) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    ids, mask, types = (torch.as_tensor(x, dtype=torch.long) for x in batch)
    # DistilBERT takes no token types; jaxqa's takes and ignores them.
    extra = {} if model.config.model_type == "distilbert" else {"token_type_ids": types}
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, **extra)
    return out.start_logits.numpy(), out.end_logits.numpy()


def save_and_convert(model, tmp_path: Path, name: str = "model") -> Path:
    """Saves `model` as a Hugging Face folder and converts it with the CLI."""
    src, out = tmp_path / f"{name}-hf", tmp_path / f"{name}-jaxqa"
    model.save_pretrained(src)
    assert pt2flax.main([str(src), str(out)]) == 0
    return out


def max_diff(model, tmp_path: Path, batch=None) -> float:
    """Max |diff| of start and end logits over the real tokens, PyTorch vs jaxqa."""
    batch = batch if batch is not None else random_batch(model.config.vocab_size)
    ours = jaxqa.load_pretrained(save_and_convert(model, tmp_path))
    theirs = torch_logits(model, batch)
    mine = [np.asarray(x) for x in ours(*batch)]
    real = batch[1] == 1
    return max(float(np.abs(a - b)[real].max()) for a, b in zip(mine, theirs))


def reloaded(model, folder: Path):
    """`model` saved to `folder` and loaded back by transformers; saving it again
    writes what a user's own checkpoints hold (see `assert_legacy_names`)."""
    model.save_pretrained(folder)
    return type(model).from_pretrained(folder).eval()


def assert_legacy_names(folder: Path) -> None:
    """The folder's weights name LayerNorm tensors as transformers 5.2 saves a
    model it has loaded: `LayerNorm.gamma`/`LayerNorm.beta`, never `.weight`/`.bias`."""
    with safe_open(str(folder / "model.safetensors"), framework="np") as f:
        names = list(f.keys())
    assert any(n.endswith("LayerNorm.gamma") for n in names) and any(n.endswith("LayerNorm.beta") for n in names), names
    assert not any(n.endswith(("LayerNorm.weight", "LayerNorm.bias")) for n in names), names


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def seeded(cls, config, seed: int = 0):
    torch.manual_seed(seed)
    return cls(config).eval()


def assert_padding_invariant(run) -> None:
    """`run(ids, mask, types)` -> (start, end): 9 extra padded positions leave the
    logits of the 16 real tokens unchanged."""
    ids, mask, types = random_batch(30522, batch=1, length=16)
    pad = lambda x: np.pad(x, ((0, 0), (0, 9)))
    short = [np.asarray(x) for x in run(ids, mask, types)]
    long = [np.asarray(x)[:, :16] for x in run(pad(ids), pad(mask), pad(types))]
    for a, b in zip(short, long):
        np.testing.assert_allclose(a, b, atol=1e-5)


def bf16_relative_error(folder: Path) -> float:
    """Relative L2 error of logits computed in bfloat16 throughout (but norms,
    softmax and logits, as in bfloat16 training) against float32 ones, over the
    real tokens of a random batch; the logits themselves stay float32."""
    batch = random_batch(30522)
    model = jaxqa.load_pretrained(folder)
    f32 = np.stack([np.asarray(x) for x in model(*batch)])
    module = type(model.module)(model.config, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    params = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), model.params)
    bf16 = np.stack([np.asarray(x) for x in module.apply({"params": params}, *batch)])
    assert bf16.dtype == np.float32
    real = np.broadcast_to(batch[1] == 1, f32.shape)
    return float(np.linalg.norm((bf16 - f32)[real]) / np.linalg.norm(f32[real]))
