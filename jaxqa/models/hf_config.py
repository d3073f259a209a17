"""Reading and writing the Hugging Face `config.json` of an encoder.

A jaxqa config is a frozen dataclass whose field names are the Hugging Face
names. Every key of a `config.json` is either such a field, or one of the keys
below that no encoder computation depends on; anything else is an error that
names the key, so that a setting jaxqa would silently ignore never gets through.
"""

import dataclasses
from typing import Any, TypeVar

from jaxqa.models import ConfigError
from jaxqa.models.layers import check_activation

# Keys every Hugging Face config may carry that do not change what an encoder
# with a span head computes (bookkeeping, generation and output switches).
GENERIC_KEYS = frozenset(
    """
    model_type architectures transformers_version _name_or_path name_or_path dtype torch_dtype
    return_dict output_hidden_states output_attentions torchscript use_return_dict
    use_cache gradient_checkpointing chunk_size_feed_forward tie_word_embeddings
    tie_encoder_decoder is_encoder_decoder pad_token_id bos_token_id eos_token_id sep_token_id
    decoder_start_token_id id2label label2id problem_type finetuning_task tokenizer_class prefix
    task_specific_params initializer_range classifier_dropout pruned_heads_applied
    max_length min_length do_sample early_stopping num_beams num_beam_groups diversity_penalty
    temperature top_k top_p typical_p repetition_penalty length_penalty no_repeat_ngram_size
    encoder_no_repeat_ngram_size bad_words_ids num_return_sequences output_scores
    return_dict_in_generate forced_bos_token_id forced_eos_token_id remove_invalid_values
    exponential_decay_length_penalty suppress_tokens begin_suppress_tokens
    cross_attention_hidden_size tf_legacy_loss use_bfloat16 _attn_implementation_autoset
    tie_weights_
    """.split()
)

# Keys whose only acceptable value is the one given: they switch on
# computations that an extractive-QA encoder does not have.
REQUIRED_VALUES = {
    "is_decoder": False,
    "add_cross_attention": False,
    "position_embedding_type": "absolute",
}

C = TypeVar("C")


def from_hf(cls: type[C], hf: dict[str, Any]) -> C:
    """Builds the dataclass `cls` from a Hugging Face config dict."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {}
    for key, value in hf.items():
        if key in names:
            values[key] = value
        elif key in REQUIRED_VALUES:
            if value != REQUIRED_VALUES[key]:
                raise ConfigError(f"config.json: {key}={value!r} is not supported (only {REQUIRED_VALUES[key]!r})")
        elif key not in GENERIC_KEYS:
            raise ConfigError(f"config.json: unknown field {key!r} for model_type {hf.get('model_type')!r}")
    labels = hf.get("id2label")
    if labels is not None and len(labels) != 2:
        raise ConfigError(f"config.json: id2label has {len(labels)} labels; a span head needs 2 (start, end)")
    return cls(**values)


def to_hf(config, model_type: str, architecture: str) -> dict[str, Any]:
    """The `config.json` that `transformers` reads back into the same model."""
    hf = {"model_type": model_type, "architectures": [architecture]}
    hf.update(dataclasses.asdict(config))
    return hf


@dataclasses.dataclass(frozen=True)
class BertFields:
    """The fields of BERT's config that SqueezeBERT's has too, at
    bert-base-uncased's values, and what follows from them; each family's
    Config adds its own fields and checks."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02

    def __post_init__(self):
        check_activation(self.hidden_act)
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size={self.hidden_size} is not a multiple of num_attention_heads={self.num_attention_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, hf: dict[str, Any]):
        return from_hf(cls, hf)
