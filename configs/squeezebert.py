"""SqueezeBERT on SQuAD: sequence 384, doc stride 128, batch 32, 2 epochs, 10%
warmup, LAMB as in SqueezeBERT's own training."""


def get_config():
    return dict(
        model="squeezebert",
        size="base",
        init="squeezebert/squeezebert-uncased",
        train_file="squad",
        eval_file="squad",
        max_seq_length=384,
        doc_stride=128,
        batch_size=32,
        epochs=2.0,
        warmup_proportion=0.1,
        optimizer="lamb",
        learning_rate=1e-3,
        weight_decay=0.01,
    )
