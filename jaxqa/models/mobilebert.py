"""MobileBERT with a SQuAD span head.

MobileBERT keeps a wide inter-block stream (`hidden_size`, 512) between layers
and runs each layer on a narrow intra-block stream (`true_hidden_size`, 128):
a bottleneck projects down, attention and a stack of small feed-forward
networks run narrow, and an output bottleneck projects back up. Token
embeddings are narrower still (`embedding_size`) and, with `trigram_input`,
each position's embedding is concatenated with its neighbours' before a Linear
widens it to `hidden_size`.

It exports the names every family module does (`jaxqa.models`).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxqa.models import ConfigError, HFNames, bert, hf_config, layers
from jaxqa.models.stacking import Repeated, apply

MODEL_TYPE = "mobilebert"
ARCHITECTURE = "MobileBertForQuestionAnswering"
HF_PREFIX = "mobilebert."  # encoder tensors in a Hugging Face checkpoint; the span head is top-level
# A layer's feed-forward networks but its last, each with its residual and norm:
# `ffn_{j}_intermediate`, `ffn_{j}_output`, `ffn_{j}_LayerNorm`.
FEED_FORWARD = Repeated("ffn", "ffn", "blocks", ("intermediate", "output", "LayerNorm"))

# The reference builds two of its norms (after the embeddings, and after a
# layer's last feed-forward network) without passing `layer_norm_eps`, so with
# `normalization_type="layer_norm"` they keep torch's default epsilon.
DEFAULT_LAYER_NORM_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class Config:
    vocab_size: int = 30522
    hidden_size: int = 512
    num_hidden_layers: int = 24
    num_attention_heads: int = 4
    intermediate_size: int = 512
    hidden_act: str = "relu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    # The word embedding row initialised to zero. With `trigram_input` the last
    # real token sees the next position's embedding, so padding leaves real
    # tokens' logits alone only while this row is zero.
    pad_token_id: int = 0
    embedding_size: int = 128
    trigram_input: bool = True
    use_bottleneck: bool = True
    intra_bottleneck_size: int = 128
    use_bottleneck_attention: bool = False
    key_query_shared_bottleneck: bool = True
    num_feedforward_networks: int = 4
    normalization_type: str = "no_norm"
    # Read only by the pooler, which the span model does not have.
    classifier_activation: bool = True

    def __post_init__(self):
        layers.check_activation(self.hidden_act)
        if self.normalization_type not in ("no_norm", "layer_norm"):
            raise ConfigError(
                f"normalization_type={self.normalization_type!r} is not supported; choose 'no_norm' or 'layer_norm'"
            )
        if self.true_hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"true_hidden_size={self.true_hidden_size} is not a multiple of num_attention_heads={self.num_attention_heads}"
            )
        if self.num_feedforward_networks < 1:
            raise ConfigError(f"num_feedforward_networks={self.num_feedforward_networks}; a layer needs at least 1")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"pad_token_id={self.pad_token_id} is outside the vocabulary of {self.vocab_size}")
        # Without a shared query/key bottleneck the wide stream feeds query and key
        # projections sized for the narrow one (the reference fails on a shape).
        if (
            self.use_bottleneck
            and not self.use_bottleneck_attention
            and not self.key_query_shared_bottleneck
            and self.intra_bottleneck_size != self.hidden_size
        ):
            raise ConfigError(
                f"key_query_shared_bottleneck=False with use_bottleneck_attention=False needs "
                f"intra_bottleneck_size ({self.intra_bottleneck_size}) == hidden_size ({self.hidden_size})"
            )

    @property
    def true_hidden_size(self) -> int:
        """Width of the intra-block stream; a derived field of the Hugging Face config."""
        return self.intra_bottleneck_size if self.use_bottleneck else self.hidden_size

    @property
    def head_dim(self) -> int:
        return self.true_hidden_size // self.num_attention_heads

    @property
    def transforms_embeddings(self) -> bool:
        """Whether `embedding_transformation` runs (the reference skips it for plain, full-width embeddings)."""
        return self.trigram_input or self.embedding_size != self.hidden_size

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "Config":
        hf = dict(hf)
        true_hidden_size = hf.pop("true_hidden_size", None)
        config = hf_config.from_hf(cls, hf)
        if true_hidden_size is not None and true_hidden_size != config.true_hidden_size:
            raise ConfigError(
                f"config.json: true_hidden_size={true_hidden_size} disagrees with use_bottleneck={config.use_bottleneck}, "
                f"intra_bottleneck_size={config.intra_bottleneck_size}, hidden_size={config.hidden_size} "
                f"(which give {config.true_hidden_size})"
            )
        return config

    def to_hf(self) -> dict[str, Any]:
        return {**hf_config.to_hf(self, MODEL_TYPE, ARCHITECTURE), "true_hidden_size": self.true_hidden_size}


SIZES = {
    "base": Config(),  # google/mobilebert-uncased, 24.6M parameters with the span head
    "tiny": Config(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        embedding_size=32,
        intra_bottleneck_size=32,
    ),
}


def _norm(part: layers.Part, epsilon: float, name: str, axis: str = "embed") -> nn.Module:
    """LayerNorm or NoNorm, as the config says, over a width logically named `axis`."""
    if part.config.normalization_type == "layer_norm":
        return part.layer_norm(epsilon, name, axis)
    return layers.NoNorm(part.dtype, part.param_dtype, axis, name=name)


def _normal_with_zero_row(std: float, row: int):
    def init(key, shape, dtype):
        return nn.initializers.normal(std)(key, shape, dtype).at[row].set(0)

    return nn.with_logical_partitioning(init, ("vocab", "embed"))


class Embeddings(layers.Part):
    @nn.compact
    def __call__(self, input_ids, token_type_ids, deterministic: bool):
        cfg = self.config
        init = _normal_with_zero_row(cfg.initializer_range, cfg.pad_token_id)
        words = layers.Table(cfg.vocab_size, cfg.embedding_size, init, self.param_dtype, name="word_embeddings")()
        x = layers.gather(words, input_ids, self.dtype, self.execution)  # (B, T, E)
        # The pad token's row learns nothing, as in PyTorch (`padding_idx`): it stays
        # the zeros a trigram sees past a window's end, whatever the padded length.
        x = jnp.where((input_ids == cfg.pad_token_id)[..., None], jax.lax.stop_gradient(x), x)
        if cfg.trigram_input:
            # A kernel-size-3 convolution over positions, folded into the Linear
            # below: each position sees [next, itself, previous], zeros past the ends
            # (the last real token of a padded row sees the pad token's embedding).
            after = jnp.pad(x[:, 1:], ((0, 0), (0, 1), (0, 0)))
            before = jnp.pad(x[:, :-1], ((0, 0), (1, 0), (0, 0)))
            x = jnp.concatenate([after, x, before], axis=-1)  # (B, T, 3E)
        if cfg.transforms_embeddings:
            x = self.dense(cfg.hidden_size, ("kernel_in", "embed"), "embedding_transformation")(x)  # (B, T, D)
        positions = self.table(cfg.max_position_embeddings, cfg.hidden_size, "position", "position_embeddings")
        types = self.table(cfg.type_vocab_size, cfg.hidden_size, "type", "token_type_embeddings")
        x = (
            x
            + layers.prefix(positions, input_ids.shape[1], self.dtype)
            + layers.one_hot_rows(types, token_type_ids, self.dtype)
        )
        x = _norm(self, DEFAULT_LAYER_NORM_EPS, "LayerNorm")(x)
        return nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)


def _feed_forward(part: layers.Part, h):
    """One feed-forward network, in the part that calls it: (B, T, K) -> (B, T, K), before the residual."""
    cfg = part.config
    y = part.dense(cfg.intermediate_size, ("bottleneck", "mlp"), "intermediate")(h)
    y = layers.activation(cfg.hidden_act, part.execution)(y)
    return part.dense(cfg.true_hidden_size, ("mlp", "bottleneck"), "output")(y)


def inner_axis(cfg: Config) -> str:
    """The logical name of a layer's inner width K: "bottleneck" (D, "embed", when there is none)."""
    return "bottleneck" if cfg.use_bottleneck else "embed"


class FeedForward(layers.Part):
    """One of a layer's stacked feed-forward networks but its last, with its
    residual and norm: (B, T, K) -> (B, T, K)."""

    @nn.compact
    def __call__(self, h):
        y = _feed_forward(self, h)
        return _norm(self, self.config.layer_norm_eps, "LayerNorm", inner_axis(self.config))(y + h)


class Layer(layers.Part):
    """One MobileBERT block on the wide stream (B, T, D); inside it runs at width K = true_hidden_size."""

    index: int

    @nn.compact
    def __call__(self, x, attention_mask, deterministic: bool):
        cfg = self.config
        k = cfg.true_hidden_size
        dropout = nn.Dropout(cfg.hidden_dropout_prob)
        inner = inner_axis(cfg)

        def add_norm(y, residual, name, epsilon=cfg.layer_norm_eps, axis=inner):
            return _norm(self, epsilon, name, axis)(y + residual)

        def bottleneck(name):  # (B, T, D) -> (B, T, K)
            y = self.dense(k, ("embed", "bottleneck"), name)(x)
            return _norm(self, cfg.layer_norm_eps, f"{name}_LayerNorm", "bottleneck")(y)

        # Query/key input, value input, and the residual of the attention output.
        if not cfg.use_bottleneck:
            query_key = value = residual = x
        else:
            residual = bottleneck("bottleneck_input")
            if cfg.use_bottleneck_attention:
                query_key = value = residual
            elif cfg.key_query_shared_bottleneck:
                query_key, value = bottleneck("bottleneck_attention"), x
            else:
                query_key = value = x  # K == D here (checked by Config)

        heads = lambda inputs, axis, name: self.heads(
            inputs, (axis, "heads"), cfg.num_attention_heads, cfg.head_dim, name
        )
        attention = layers.Attention(cfg.attention_probs_dropout_prob, self.execution)
        context = attention(
            heads(query_key, "bottleneck", "query"),
            heads(query_key, "bottleneck", "key"),
            heads(value, "bottleneck" if cfg.use_bottleneck_attention else "embed", "value"),
            attention_mask,
            deterministic,
        )  # (B, T, K)
        y = self.dense(k, ("heads", "bottleneck"), "attention_output")(context)
        if not cfg.use_bottleneck:  # with bottlenecks the reference drops out only after the output bottleneck
            y = dropout(y, deterministic=deterministic)
        h = add_norm(y, residual, "attention_LayerNorm")  # (B, T, K)
        network = FeedForward(cfg, self.dtype, self.param_dtype, self.execution, parent=None)
        h = apply(self, FEED_FORWARD, [network] * (cfg.num_feedforward_networks - 1), h, execution=self.execution)
        y = _feed_forward(self, h)
        if not cfg.use_bottleneck:
            y = dropout(y, deterministic=deterministic)
        h = add_norm(y, h, "output_LayerNorm", DEFAULT_LAYER_NORM_EPS)
        if not cfg.use_bottleneck:
            return h  # K == D
        y = self.dense(cfg.hidden_size, ("bottleneck", "embed"), "output_bottleneck")(h)  # (B, T, D)
        return add_norm(dropout(y, deterministic=deterministic), x, "output_bottleneck_LayerNorm", axis="embed")


def hf_export_extras(config: Config) -> dict[str, np.ndarray]:
    """Weights the reference builds but never runs, for some configs.

    `embedding_transformation` exists even when plain, full-width embeddings
    skip it; `bottleneck.attention` exists whenever `key_query_shared_bottleneck`
    is set, even when `use_bottleneck_attention` takes over query and key.
    Initialised as the reference initialises them, from a fixed seed so that
    exports are reproducible.
    """
    rng = np.random.default_rng(0)
    d, k = config.hidden_size, config.intra_bottleneck_size
    extras = {}
    if not config.transforms_embeddings:
        name = f"{HF_PREFIX}embeddings.embedding_transformation"
        extras[f"{name}.weight"] = (rng.standard_normal((d, config.embedding_size)) * config.initializer_range).astype(
            np.float32
        )
        extras[f"{name}.bias"] = np.zeros((d,), np.float32)
    if config.use_bottleneck and config.use_bottleneck_attention and config.key_query_shared_bottleneck:
        for i in range(config.num_hidden_layers):
            name = f"{HF_PREFIX}encoder.layer.{i}.bottleneck.attention"
            extras[f"{name}.dense.weight"] = (rng.standard_normal((k, d)) * config.initializer_range).astype(np.float32)
            extras[f"{name}.dense.bias"] = np.zeros((k,), np.float32)
            extras[f"{name}.LayerNorm.weight"] = np.ones((k,), np.float32)
            extras[f"{name}.LayerNorm.bias"] = np.zeros((k,), np.float32)
    return extras


def forward_flops(cfg: Config, s: int) -> int:
    """Matrix-multiply FLOPs of one forward pass over one sequence of `s` tokens."""
    d, k, m = cfg.hidden_size, cfg.true_hidden_size, cfg.intermediate_size
    embeddings = 0
    if cfg.transforms_embeddings:  # (S, 3E or E) -> (S, D)
        embeddings = layers.dense_flops(s, cfg.embedding_size * (3 if cfg.trigram_input else 1), d)
    # Widths of the query/key and value inputs, and the bottlenecks, as `Layer` picks them.
    if not cfg.use_bottleneck:
        query_key, value, bottlenecks = d, d, 0
    elif cfg.use_bottleneck_attention:
        query_key, value, bottlenecks = (
            k,
            k,
            layers.dense_flops(s, d, k) + layers.dense_flops(s, k, d),
        )  # input and output bottlenecks
    elif cfg.key_query_shared_bottleneck:
        query_key, value, bottlenecks = (
            k,
            d,
            2 * layers.dense_flops(s, d, k) + layers.dense_flops(s, k, d),
        )  # and the query/key bottleneck
    else:
        query_key, value, bottlenecks = d, d, layers.dense_flops(s, d, k) + layers.dense_flops(s, k, d)
    layer = (
        bottlenecks
        + 2 * layers.dense_flops(s, query_key, k)
        + layers.dense_flops(s, value, k)  # query, key, value: (S, K)
        + layers.attention_flops(s, k)
        + layers.dense_flops(s, k, k)  # attention output
        + cfg.num_feedforward_networks * (layers.dense_flops(s, k, m) + layers.dense_flops(s, m, k))
    )
    return embeddings + cfg.num_hidden_layers * layer + layers.dense_flops(s, d, 2)  # span head


ATTENTION_DROPOUT = "attention_probs_dropout_prob"
LAYER_BLOCKS = (FEED_FORWARD,)
HF = HFNames(
    prefix=HF_PREFIX,
    dropped=("pooler.", "cls.", "embeddings.position_ids"),
    layer="encoder.layer.{i}",
    layer_modules={
        **bert.HF.layer_modules,  # MobileBERT keeps BERT's names where it has BERT's modules
        "ffn_{j}_intermediate": "ffn.{j}.intermediate.dense",
        "ffn_{j}_output": "ffn.{j}.output.dense",
        "ffn_{j}_LayerNorm": "ffn.{j}.output.LayerNorm",
        "bottleneck_input": "bottleneck.input.dense",
        "bottleneck_input_LayerNorm": "bottleneck.input.LayerNorm",
        "bottleneck_attention": "bottleneck.attention.dense",
        "bottleneck_attention_LayerNorm": "bottleneck.attention.LayerNorm",
        "output_bottleneck": "output.bottleneck.dense",
        "output_bottleneck_LayerNorm": "output.bottleneck.LayerNorm",
    },
)
