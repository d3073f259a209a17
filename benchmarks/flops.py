"""Matrix-multiply FLOPs of one forward pass of each model, written down from
its config (tests/test_flop_count.py checks them against the lowered program):
the numerator of model FLOPs utilisation in the benchmarks."""


def dense(s: int, n_in: int, n_out: int, groups: int = 1) -> int:
    """A Linear (or grouped kernel-size-1 convolution) applied to s positions."""
    return 2 * s * n_in * n_out // groups


def attention(s: int, width: int) -> int:
    """Scores (S, S) and the weighted sum of values, all heads together `width` wide."""
    return 4 * s * s * width


def bert_flops(cfg, s: int) -> int:
    d, m = cfg.hidden_size, cfg.intermediate_size
    total = 0
    for i in range(cfg.num_hidden_layers):
        inner = cfg.heads(i) * cfg.head_dim  # narrower where heads are pruned
        total += 3 * dense(s, d, inner) + attention(s, inner) + dense(s, inner, d)  # query, key, value; output
        total += dense(s, d, m) + dense(s, m, d)  # feed-forward
    return total + dense(s, d, 2)  # span head


def squeezebert_flops(cfg, s: int) -> int:
    d, m = cfg.hidden_size, cfg.intermediate_size
    layer = (
        dense(s, d, d, cfg.q_groups) + dense(s, d, d, cfg.k_groups) + dense(s, d, d, cfg.v_groups)
        + attention(s, d)
        + dense(s, d, d, cfg.post_attention_groups)
        + dense(s, d, m, cfg.intermediate_groups) + dense(s, m, d, cfg.output_groups)
    )
    return cfg.num_hidden_layers * layer + dense(s, d, 2)  # span head


def mobilebert_flops(cfg, s: int) -> int:
    d, k, m = cfg.hidden_size, cfg.true_hidden_size, cfg.intermediate_size
    embeddings = 0
    if cfg.transforms_embeddings:  # (S, 3E or E) -> (S, D)
        embeddings = dense(s, cfg.embedding_size * (3 if cfg.trigram_input else 1), d)
    # Widths of the query/key and value inputs, and the bottlenecks, as `mobilebert.Layer` picks them.
    if not cfg.use_bottleneck:
        query_key, value, bottlenecks = d, d, 0
    elif cfg.use_bottleneck_attention:
        query_key, value, bottlenecks = k, k, dense(s, d, k) + dense(s, k, d)  # input and output bottlenecks
    elif cfg.key_query_shared_bottleneck:
        query_key, value, bottlenecks = k, d, 2 * dense(s, d, k) + dense(s, k, d)  # and the query/key bottleneck
    else:
        query_key, value, bottlenecks = d, d, dense(s, d, k) + dense(s, k, d)
    layer = (
        bottlenecks
        + 2 * dense(s, query_key, k) + dense(s, value, k)  # query, key, value: (S, K)
        + attention(s, k)
        + dense(s, k, k)  # attention output
        + cfg.num_feedforward_networks * (dense(s, k, m) + dense(s, m, k))
    )
    return embeddings + cfg.num_hidden_layers * layer + dense(s, d, 2)  # span head


FLOPS = {"bert": bert_flops, "squeezebert": squeezebert_flops, "mobilebert": mobilebert_flops}


def forward_flops(model_type: str, config, seq_len: int) -> int:
    """Matrix-multiply FLOPs of one forward pass over one sequence of `seq_len` tokens.

    Every Linear (and grouped convolution, at 1/groups of the dense cost) counts
    2 x inputs x outputs per token, attention 4 x S x all-head width per token;
    lookups, norms, activations and softmax are not counted. A training step is
    3 times this (the backward pass takes two matmuls per forward one).
    """
    return FLOPS[model_type](config, seq_len)
