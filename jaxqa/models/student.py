"""A student made from its teacher: the teacher's embeddings, span head and a
chosen subset of its layers, in the teacher's family or, from a BERT teacher, as
DistilBERT (which was initialised from BERT the same way, one layer out of two).

Pure: a config and parameters in, a config and parameters out (as the models
hold them; the choice is made one layer per name, `encoder.per_layer`), with
notes on what is not exact.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxqa.errors import Error
from jaxqa.models import distilbert
from jaxqa.models.encoder import per_layer, stacked

# BERT module -> DistilBERT module of the same computation.
BERT_TO_DISTILBERT = {
    "query": "q_lin",
    "key": "k_lin",
    "value": "v_lin",
    "attention_output": "out_lin",
    "attention_LayerNorm": "sa_layer_norm",
    "intermediate": "lin1",
    "output": "lin2",
    "output_LayerNorm": "output_layer_norm",
}


class StudentError(Error):
    """A student that cannot be made; the message names the option at fault."""


def every_other(num_layers: int) -> tuple[int, ...]:
    """The default choice: layers 0, 2, 4, ..."""
    return tuple(range(0, num_layers, 2))


def make_student(
    model_type: str, config, params: dict, layers: Sequence[int], family: str
) -> tuple[object, dict, list[str]]:
    """(student config, student parameters, notes on what is approximate) for the
    teacher's `layers` (in the teacher's order) as a model of `family`."""
    depth = config.num_hidden_layers
    layers = tuple(layers)
    if not layers or list(layers) != sorted(set(layers)) or not 0 <= layers[0] <= layers[-1] < depth:
        raise StudentError(
            f"--layers {','.join(map(str, layers))}: choose increasing layers of the teacher's 0..{depth - 1}"
        )
    notes: list[str] = []
    if family == model_type:
        student_config, student = _same_family(model_type, config, per_layer(config, params), layers)
    elif (model_type, family) == ("bert", "distilbert"):
        student_config, student, notes = _bert_to_distilbert(config, per_layer(config, params), layers)
    else:
        raise StudentError(
            f"--family {family}: a {model_type} teacher makes a {model_type} student"
            + (" or a distilbert one" if model_type == "bert" else "")
        )
    return student_config, stacked(student_config, student), notes


def _same_family(model_type: str, config, params: dict, layers: tuple[int, ...]):
    depth_field = "n_layers" if model_type == "distilbert" else "num_hidden_layers"
    fields: dict[str, Any] = {depth_field: len(layers)}
    if model_type == "bert":  # pruned heads and feed-forward widths follow their layers to the new numbers
        pruned = dict(config.pruned_heads)
        fields["pruned_heads"] = tuple((new, pruned[old]) for new, old in enumerate(layers) if old in pruned)
        fields["intermediate_sizes"] = (
            tuple(config.intermediate_sizes[old] for old in layers) if config.intermediate_sizes else ()
        )
    student = {key: value for key, value in params.items() if not key.startswith("layer_")}
    student |= {f"layer_{new}": params[f"layer_{old}"] for new, old in enumerate(layers)}
    return dataclasses.replace(config, **fields), student


def _bert_to_distilbert(config, params: dict, layers: tuple[int, ...]):
    pruned = [layer for layer, _ in config.pruned_heads if layer in layers]
    if pruned:
        raise StudentError(f"--layers: layer(s) {pruned} have pruned heads, which DistilBERT cannot hold")
    if config.intermediate_sizes:
        raise StudentError(
            "--family distilbert: the teacher's feed-forward layers differ in width, which DistilBERT "
            "cannot hold (one hidden_dim)"
        )
    student_config = distilbert.Config(
        vocab_size=config.vocab_size,
        max_position_embeddings=config.max_position_embeddings,
        n_layers=len(layers),
        n_heads=config.num_attention_heads,
        dim=config.hidden_size,
        hidden_dim=config.intermediate_size,
        dropout=config.hidden_dropout_prob,
        attention_dropout=config.attention_probs_dropout_prob,
        activation=config.hidden_act,
        initializer_range=config.initializer_range,
        qa_dropout=config.hidden_dropout_prob,
    )
    embeddings = params["embeddings"]
    types = np.asarray(embeddings["token_type_embeddings"]["embedding"])  # (types, D)
    # BERT adds word + position + type; DistilBERT word + position. Type 0 is
    # folded into the positions, exactly; other types lose their difference to it.
    positions = np.asarray(embeddings["position_embeddings"]["embedding"]) + types[0]  # (P, D)
    student = {
        "embeddings": {
            "word_embeddings": embeddings["word_embeddings"],
            "position_embeddings": {"embedding": positions},
            "LayerNorm": embeddings["LayerNorm"],
        },
        "qa_outputs": params["qa_outputs"],
    }
    for new, old in enumerate(layers):
        student[f"layer_{new}"] = {BERT_TO_DISTILBERT[name]: leaves for name, leaves in params[f"layer_{old}"].items()}
    word_norm = float(np.linalg.norm(np.asarray(embeddings["word_embeddings"]["embedding"]), axis=1).mean())
    notes = [
        f"token-type embedding {t} is approximated by type 0 (folded into the position embeddings): its difference, "
        f"of norm {np.linalg.norm(types[t] - types[0]):.3f} (a word embedding's is {word_norm:.3f} on average), is "
        "lost; in SQuAD windows the context tokens have type 1, the question tokens type 0 (exact)"
        for t in range(1, len(types))
    ]
    if config.layer_norm_eps != distilbert.LAYER_NORM_EPS:
        notes.append(
            f"LayerNorm epsilon {config.layer_norm_eps} becomes DistilBERT's fixed {distilbert.LAYER_NORM_EPS}"
        )
    return student_config, student, notes
