"""BERT with a SQuAD span head, including pruned checkpoints: heads removed
per layer (`pruned_heads`) and feed-forward layers of their own widths
(`intermediate_sizes`, which `transformers` cannot hold; see `jaxqa.models.compact`).

It exports the names every family module does (`jaxqa.models`).
"""

import dataclasses
from typing import Any

import flax.linen as nn

from jaxqa.models import ConfigError, HFNames, hf_config
from jaxqa.models.layers import Attention, Part, activation, attention_flops, dense_flops
from jaxqa.models.layers import Embeddings as Embeddings  # the embeddings BERT and SqueezeBERT share

MODEL_TYPE = "bert"
ARCHITECTURE = "BertForQuestionAnswering"


@dataclasses.dataclass(frozen=True)
class Config(hf_config.BertFields):
    # ((layer, (head, ...)), ...): heads removed from each layer, as in `pruned_heads`.
    pruned_heads: tuple[tuple[int, tuple[int, ...]], ...] = ()
    # Feed-forward units of each layer, where pruning made them differ; (): `intermediate_size` everywhere.
    intermediate_sizes: tuple[int, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        pruned = self.pruned_heads.items() if isinstance(self.pruned_heads, dict) else self.pruned_heads
        pruned = tuple(sorted((int(layer), tuple(sorted(set(heads)))) for layer, heads in pruned))
        for layer, heads in pruned:
            if not 0 <= layer < self.num_hidden_layers or any(not 0 <= h < self.num_attention_heads for h in heads):
                raise ConfigError(f"pruned_heads: layer {layer} heads {list(heads)} out of range")
        object.__setattr__(self, "pruned_heads", pruned)
        widths = tuple(int(w) for w in self.intermediate_sizes)
        if widths and (len(widths) != self.num_hidden_layers or min(widths) < 0):
            raise ConfigError(
                f"intermediate_sizes {list(widths)}: needs one width of 0 or more per layer ({self.num_hidden_layers})"
            )
        object.__setattr__(self, "intermediate_sizes", widths)

    def heads(self, layer: int) -> int:
        """Attention heads left in `layer` after pruning."""
        return self.num_attention_heads - len(dict(self.pruned_heads).get(layer, ()))

    def ffn(self, layer: int) -> int:
        """Feed-forward units of `layer`."""
        return self.intermediate_sizes[layer] if self.intermediate_sizes else self.intermediate_size

    def to_hf(self) -> dict[str, Any]:
        hf = hf_config.to_hf(self, MODEL_TYPE, ARCHITECTURE)
        hf["pruned_heads"] = {str(layer): list(heads) for layer, heads in self.pruned_heads}
        if self.intermediate_sizes:
            hf["intermediate_sizes"] = list(self.intermediate_sizes)
        else:
            del hf["intermediate_sizes"]  # a config.json that transformers reads as it is
        return hf


SIZES = {
    "base": Config(),  # bert-base-uncased, 109M parameters with the span head
    "large": Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "minilm-l6": Config(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "tiny": Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
}


class Layer(Part):
    """Layer `index`, with the heads and feed-forward units left to it: (B, T, D) -> (B, T, D)."""

    index: int

    @nn.compact
    def __call__(self, x, attention_mask, deterministic: bool):
        cfg = self.config
        dropout = nn.Dropout(cfg.hidden_dropout_prob)
        heads = lambda name: self.heads(x, ("embed", "heads"), cfg.heads(self.index), cfg.head_dim, name)
        attention = Attention(cfg.attention_probs_dropout_prob, self.execution)
        context = attention(
            heads("query"), heads("key"), heads("value"), attention_mask, deterministic
        )  # (B, T, N * H)
        y = self.dense(cfg.hidden_size, ("heads", "embed"), "attention_output")(context)
        x = self.layer_norm(cfg.layer_norm_eps, "attention_LayerNorm")(dropout(y, deterministic=deterministic) + x)
        y = self.dense(cfg.ffn(self.index), ("embed", "mlp"), "intermediate")(x)
        y = activation(cfg.hidden_act, self.execution)(y)
        y = self.dense(cfg.hidden_size, ("mlp", "embed"), "output")(y)
        return self.layer_norm(cfg.layer_norm_eps, "output_LayerNorm")(dropout(y, deterministic=deterministic) + x)


def forward_flops(cfg: Config, s: int) -> int:
    """Matrix-multiply FLOPs of one forward pass over one sequence of `s` tokens."""
    d = cfg.hidden_size
    total = 0
    for i in range(cfg.num_hidden_layers):
        inner = cfg.heads(i) * cfg.head_dim  # narrower where heads are pruned
        total += (
            3 * dense_flops(s, d, inner) + attention_flops(s, inner) + dense_flops(s, inner, d)
        )  # query, key, value; output
        total += dense_flops(s, d, cfg.ffn(i)) + dense_flops(s, cfg.ffn(i), d)  # feed-forward
    return total + dense_flops(s, d, 2)  # span head


ATTENTION_DROPOUT = "attention_probs_dropout_prob"
HF = HFNames(
    prefix="bert.",
    dropped=("pooler.", "cls.", "embeddings.position_ids", "embeddings.token_type_ids"),
    layer="encoder.layer.{i}",
    layer_modules={
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attention_output": "attention.output.dense",
        "attention_LayerNorm": "attention.output.LayerNorm",
        "intermediate": "intermediate.dense",
        "output": "output.dense",
        "output_LayerNorm": "output.LayerNorm",
    },
)
