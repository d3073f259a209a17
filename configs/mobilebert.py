"""MobileBERT on SQuAD: the MobileBERT release's fine-tuning recipe (sequence
384, doc stride 128, batch 32, 5 epochs, 10% warmup), trained with LAMB."""


def get_config():
    return dict(
        model="mobilebert",
        size="base",
        init="google/mobilebert-uncased",
        train_file="squad",
        eval_file="squad",
        max_seq_length=384,
        doc_stride=128,
        batch_size=32,
        epochs=5.0,
        warmup_proportion=0.1,
        optimizer="lamb",
        learning_rate=1e-3,
        weight_decay=0.01,
    )
