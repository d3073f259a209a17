"""Session-wide test settings and the fixtures several modules share.

Tiers: `pytest -m "not slow"` is the inner loop (minutes); `slow` marks what
trains in subprocesses, installs the wheel, or runs full-size models. CI runs
everything.
"""

import os
from pathlib import Path

import jax
import pytest
from flax import linen as nn
from squad_fixture import write_squad

from jaxqa import checkpoint, models
from jaxqa.models import bert
from jaxqa.models.encoder import SpanModel


@pytest.fixture(scope="session", autouse=True)
def compilation_cache_in_tmp(tmp_path_factory):
    """The tools' persistent compilation cache goes to a folder of this session,
    not the user's home; the commands that tests start inherit it."""
    os.environ["JAXQA_XLA_CACHE"] = str(tmp_path_factory.mktemp("xla-cache"))
    yield
    del os.environ["JAXQA_XLA_CACHE"]


@pytest.fixture(scope="session", autouse=True)
def datasets_cache_in_tmp(tmp_path_factory):
    """`datasets` converts flat files into Arrow tables in a folder of this
    session, not the user's cache; the commands that tests start inherit it."""
    os.environ["HF_DATASETS_CACHE"] = str(tmp_path_factory.mktemp("datasets-cache"))
    yield
    del os.environ["HF_DATASETS_CACHE"]


@pytest.fixture(scope="session")
def squad(tmp_path_factory) -> Path:
    """The synthetic SQuAD 1.1 file (`squad_fixture`), its vocab.txt beside it."""
    return write_squad(tmp_path_factory.mktemp("squad"))


@pytest.fixture(scope="session")
def squad_v2(tmp_path_factory) -> Path:
    """The synthetic set as SQuAD 2.0, with an unanswerable question per paragraph."""
    return write_squad(tmp_path_factory.mktemp("squad-v2"), with_negatives=True)


@pytest.fixture(scope="session")
def teacher(squad, tmp_path_factory) -> Path:
    """A tiny BERT with the squad fixture's tokenizer, standing in for a fine-tuned teacher."""
    params = jax.device_get(nn.meta.unbox(models.init_params(SpanModel(bert.SIZES["tiny"]), jax.random.key(7))))
    return checkpoint.save_pretrained(
        tmp_path_factory.mktemp("teacher") / "bert", "bert", bert.SIZES["tiny"], params, squad.parent
    )
