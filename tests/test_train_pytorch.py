"""`python -m jaxqa.train` against a plain PyTorch training loop: on the same
windows, in the same order, from the same `transformers` weights, the per-step
losses agree. This guards the whole training path: model, loss, gradients,
clipping, AdamW and its schedule."""

import json
import shutil

import numpy as np
import pytest
from squad_fixture import write_squad

from jaxqa import train
from jaxqa.squad.features import FeatureSettings, train_features
from jaxqa.squad.tokenizer import load_tokenizer
from jaxqa.training import batches, optim

torch = pytest.importorskip("torch", reason="needs torch (pip install 'jaxqa[torch]')")
transformers = pytest.importorskip("transformers", reason="needs transformers==5.2.0")

STEPS, BATCH, LEARNING_RATE, WARMUP = 6, 8, 1e-3, 0.25
WINDOWS = FeatureSettings(max_seq_length=64, doc_stride=16, max_query_length=16)
LENGTH_STEP = 16


def pytorch_losses(folder, train_file, tokenizer_dir) -> list[float]:
    """Per-step losses of BertForQuestionAnswering trained as jaxqa trains it:
    padding out of the softmax, AdamW with decay on weights and embeddings only,
    gradients clipped to norm 1, linear warm-up then decay."""
    model = transformers.BertForQuestionAnswering.from_pretrained(folder, attention_probs_dropout_prob=0.0).train()
    named = list(model.named_parameters())
    decayed = [p for name, p in named if not name.endswith("bias") and "LayerNorm" not in name]
    others = [p for name, p in named if name.endswith("bias") or "LayerNorm" in name]
    opt = torch.optim.AdamW(
        [{"params": decayed, "weight_decay": 0.01}, {"params": others, "weight_decay": 0.0}],
        lr=LEARNING_RATE,
        betas=(optim.B1, optim.B2),
        eps=optim.EPS,
    )
    schedule = optim.schedule(LEARNING_RATE, int(WARMUP * STEPS), STEPS)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: float(schedule(step)) / LEARNING_RATE)
    data = train_features(batches.read(str(train_file), "train", 0), load_tokenizer(tokenizer_dir), WINDOWS)
    losses = []
    for step in range(STEPS):
        rows = batches.step_rows(data, step, BATCH, 0, LENGTH_STEP)
        batch = {
            key: torch.as_tensor(np.asarray(value[0]), dtype=torch.long)
            for key, value in batches.train_batch(data, rows, 1, LENGTH_STEP, 0, 1).items()
        }
        out = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"]
        )
        padding = batch["attention_mask"] == 0
        start, end = (logits.masked_fill(padding, -1e9) for logits in (out.start_logits, out.end_logits))
        loss = (
            torch.nn.functional.cross_entropy(start, batch["start_positions"])
            + torch.nn.functional.cross_entropy(end, batch["end_positions"])
        ) / 2
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        scheduler.step()
    return losses


def test_a_few_steps_match_a_plain_pytorch_loop(tmp_path):
    squad = write_squad(tmp_path / "squad")
    vocab = len((squad.parent / "vocab.txt").read_text().split())
    # Hidden dropout 0 in the config; attention's 0.1 is turned off by the flag below.
    config = transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.1,
    )
    torch.manual_seed(0)
    folder = tmp_path / "bert"
    transformers.BertForQuestionAnswering(config).save_pretrained(folder)
    shutil.copy2(squad.parent / "vocab.txt", folder / "vocab.txt")
    run_dir = tmp_path / "run"
    assert (
        train.main(
            [
                "--model",
                "bert",
                "--init",
                str(folder),
                "--train-file",
                str(squad),
                "--eval-file",
                "",
                "--run-dir",
                str(run_dir),
                "--optimizer",
                "adamw",
                "--learning-rate",
                str(LEARNING_RATE),
                "--warmup-proportion",
                str(WARMUP),
                "--weight-decay",
                "0.01",
                "--max-steps",
                str(STEPS),
                "--batch-size",
                str(BATCH),
                "--max-seq-length",
                str(WINDOWS.max_seq_length),
                "--doc-stride",
                str(WINDOWS.doc_stride),
                "--max-query-length",
                str(WINDOWS.max_query_length),
                "--length-step",
                str(LENGTH_STEP),
                "--precision",
                "fp32",
                "--log-every",
                "1",
                "--attention-dropout",
                "0",
            ]
        )
        == 0
    )
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    ours = [r["loss"] for r in records if "loss" in r]
    assert json.loads((run_dir / "run.json").read_text())["settings"]["attention_dropout"] == 0.0
    theirs = pytorch_losses(folder, squad, squad.parent)
    assert len(ours) == STEPS and len(set(theirs)) == STEPS  # every step trained
    np.testing.assert_allclose(ours, theirs, rtol=2e-5)
