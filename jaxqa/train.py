"""Fine-tunes BERT, SqueezeBERT, MobileBERT or DistilBERT on SQuAD 1.1 or 2.0,
distilling from a teacher and pruning (BERT) if asked.

    python -m jaxqa.train --model squeezebert [--config squeezebert:tiny] [--init DIR] [--train-file F] ...

Sharded with one `jax.jit` over a (data, model) device mesh; resumable from the
run folder after any interruption; evaluated with the official metric. `train`
runs the phases of a run in order, top to bottom; each phase lives in a module
of `jaxqa.training` and takes its group of the settings.
"""

import logging
import sys

import jax

from jaxqa.errors import Error, log_to
from jaxqa.models import compact
from jaxqa.training import settings
from jaxqa.training.batches import load_data
from jaxqa.training.devices import make_mesh, report_devices, start_processes
from jaxqa.training.finish import export_final, summarize
from jaxqa.training.hooks import Evaluate, Log, Save, evaluator
from jaxqa.training.loop import Feed, Throughput, compile_step, loop, signals_caught
from jaxqa.training.model import build_model, read_teacher
from jaxqa.training.plan import plan_optimization
from jaxqa.training.resume import fresh, resume
from jaxqa.training.run_folder import MetricsLog, RunFolder, exclusive, tidied
from jaxqa.training.settings import Settings, parse, validate, validate_mesh
from jaxqa.training.state import lay_out_state, model_of

log = logging.getLogger("jaxqa.train")


def main(argv=None, prog: str = "python -m jaxqa.train") -> int:
    try:
        s = parse(argv, prog)
        with log_to(sys.stdout, logging.INFO if s.devices.process_id == 0 else logging.WARNING):  # the leader speaks
            return train(s)
    except Error as err:
        print(f"jaxqa.train: error: {err}", file=sys.stderr)
        return 2


def train(s: Settings) -> int:
    """One run, phase by phase: 0 when it ends; stopped by a signal (and saved),
    128 + the signal's number, as a shell reports a process the signal ended."""
    # ---------------------------------------------------------------- the devices, the model, its data, the plan
    validate(s)
    mesh_shape = start_processes(s.devices)
    report_devices()
    validate_mesh(s, mesh_shape["data"], jax.process_count())
    mesh = make_mesh(mesh_shape)
    model = build_model(s.encoder, s.data.max_seq_length)
    data = load_data(s.data, model.tokenizer)
    teacher = read_teacher(s.distillation, s.data.max_seq_length, model)
    plan = plan_optimization(s.optimization, s.pruning, model.module, len(data.train.input_ids), s.data.train_file)
    layout = lay_out_state(model.module, plan, mesh, s.devices.fsdp)
    recorded = settings.recorded(s, data.train_digest, teacher.digest() if teacher else None)
    with tidied(s.run_folder), exclusive(s.run_folder):
        # ------------------------------------------------------------ the state: resumed, or fresh
        folder = RunFolder(
            s.run_folder, model.family, model.config, model.tokenizer_dir, keep=s.output.keep,
            shrink=compact.compact if plan.prune else None,
        )  # fmt: skip
        state = resume(folder, recorded, s.output.allow_changed_settings, layout)
        if state is None:
            state = fresh(model, layout, s.optimization.seed)
        folder.record_settings(recorded)
        # ------------------------------------------------------------ the loop, and the hooks after each step
        step = compile_step(model.module, plan, layout, s.optimization.seed, teacher)
        feed = Feed(data.train, s.optimization, s.data.length_step)
        throughput = Throughput(s.optimization.batch_size)
        metrics = MetricsLog(s.run_folder, enabled=jax.process_index() == 0)
        pruned = model_of(plan, layout)
        scores = evaluator(model.module, data.eval, mesh, s.evaluation, s.data.length_step)
        logged = Log(s.output.log_every, plan, throughput, metrics, folder, first_step=int(state.step))
        evaluation = Evaluate(s.evaluation.every, plan.total_steps, pruned, scores, metrics, folder)
        with signals_caught() as stop:
            hooks = (logged, evaluation, Save(s.output.save_every, folder))
            state = loop(state, step, feed, plan.total_steps, hooks, throughput, stop)
        if stop.signal is not None:
            log.info(f"stopped by signal {stop.signal} at step {int(state.step)}; the same command resumes from "
                     f"{folder.directory}")  # fmt: skip
            return 128 + stop.signal
        # ------------------------------------------------------------ the end
        params, kept = pruned(state)
        export_final(params, kept, folder, plan.prune, s.data.max_seq_length)
        summarize(int(state.step), evaluation.final(int(state.step), params), throughput, metrics, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
