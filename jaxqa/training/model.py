"""The model a run trains (its config, the module that trains it, its tokenizer,
where its weights come from) and the teacher it may distil from."""

import dataclasses
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
from tokenizers import Tokenizer

from jaxqa import models, precision
from jaxqa.checkpoint import Source, open_checkpoint, params_digest
from jaxqa.errors import Error
from jaxqa.models import execution
from jaxqa.models.encoder import SpanModel
from jaxqa.squad.tokenizer import load_tokenizer
from jaxqa.training.settings import DistillationSettings, EncoderSettings, SettingsError, blame

log = logging.getLogger("jaxqa.train")


@dataclasses.dataclass(frozen=True)
class Model:
    """The model a run trains: its family, its config as the run folder keeps it,
    the module that trains it (compute dtype, layout, attention dropout), its
    tokenizer and where the starting weights come from (None: random, of the
    named `size`)."""

    family: str
    size: str
    config: models.ModelConfig
    module: SpanModel
    tokenizer: Tokenizer
    tokenizer_dir: Path
    source: Source | None


def build_model(e: EncoderSettings, max_seq_length: int) -> Model:
    """The model --init and --tokenizer name, checked to take windows of `max_seq_length` tokens."""
    source, config, tokenizer_dir = _starting_point(e)
    models.check_length(config, max_seq_length, "--max-seq-length")
    with blame("--tokenizer" if e.tokenizer else "--init"):
        tokenizer = load_tokenizer(tokenizer_dir, config.vocab_size)
    platform = jax.devices()[0].platform
    bf16 = e.precision == "bf16" or (e.precision == "auto" and precision.training_bf16(platform, precision.cpu_flags()))
    ex = execution.for_training(platform, bf16, e.scan_layers, e.remat_for(platform))
    # The run folder keeps the config as it came; training may drop out attention at another rate.
    trained = config
    if e.attention_dropout is not None:
        rate = models.family(e.family).attention_dropout
        trained = dataclasses.replace(config, **{rate: e.attention_dropout})  # type: ignore[type-var]
    module = SpanModel(trained, jnp.bfloat16 if bf16 else jnp.float32, jnp.float32, ex)
    log.info(f"{e.family}: layers {'scanned' if ex.scan else 'unrolled'}, remat {ex.remat}, "
             f"compute in {'bfloat16' if bf16 else 'float32'}")  # fmt: skip
    return Model(e.family, e.size, config, module, tokenizer, tokenizer_dir, source)


def _starting_point(e: EncoderSettings) -> tuple[Source | None, models.ModelConfig, Path]:
    """(where the weights come from, the config, the tokenizer's folder) of --init."""
    if e.init == "random":
        fam = models.family(e.family)
        if not e.tokenizer:
            raise SettingsError("--init random needs --tokenizer DIR (a folder with tokenizer.json or vocab.txt)")
        if e.size not in fam.sizes:
            raise SettingsError(f"--size {e.size!r}: {e.family} has {', '.join(fam.sizes)}")
        return None, fam.sizes[e.size], Path(e.tokenizer)
    try:
        source = open_checkpoint(e.init)
    except Error as err:
        raise SettingsError(
            f"--init {e.init}: {err}. Point --init at a local folder (a Hugging Face checkpoint or "
            "the output of convert/pt2flax.py), or use --init random --tokenizer DIR"
        ) from None
    if source.model_type != e.family:
        raise SettingsError(f"--init {e.init} holds a {source.model_type} model, not --model {e.family}")
    return source, source.config, Path(e.tokenizer or source.folder)


@dataclasses.dataclass(frozen=True)
class Teacher:
    """The fine-tuned model a run distils from, and how its answers weigh."""

    source: Source
    params: dict  # on the host
    alpha: float
    temperature: float

    def digest(self) -> str:
        """Of its weights, which may change under the same path."""
        return params_digest(self.source.config, self.params)


def read_teacher(d: DistillationSettings, max_seq_length: int, student: Model) -> Teacher | None:
    """The --teacher, checked against the student's tokenizer and the windows' length; None without one."""
    if not d.teacher:
        return None
    try:
        source = open_checkpoint(d.teacher)
        same_tokens = load_tokenizer(source.folder, source.config.vocab_size).to_str() == student.tokenizer.to_str()
        models.check_length(source.config, max_seq_length, "--max-seq-length")
        params = source.read_params(need_head="a teacher must be a question-answering model, fine-tuned")
    except Error as err:
        raise SettingsError(f"--teacher {d.teacher}: {err}") from None
    if not same_tokens:
        raise SettingsError(
            f"--teacher {source.folder} and the student ({student.tokenizer_dir}) tokenize differently; "
            "a teacher must share the student's tokenizer"
        )
    return Teacher(source, params, d.alpha, d.temperature)
