"""Makes a student checkpoint from a teacher: the teacher's embeddings, span head
and a chosen subset of its layers, in its family or, from BERT, as DistilBERT.

    python convert/make_student.py TEACHER OUT [--layers 0,2,4] [--family distilbert]

Each note on what is approximate is printed. An installed jaxqa has the same
command as `jaxqa-student`.
"""

import argparse
import sys

from jaxqa import models
from jaxqa.checkpoint import open_checkpoint, save_pretrained
from jaxqa.errors import Error
from jaxqa.models import student


def main(argv=None, prog: str = "make_student") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Makes a student checkpoint from a teacher: its "
        "embeddings, span head and chosen layers, in its family or as DistilBERT.",
    )
    parser.add_argument("teacher", help="jaxqa checkpoint or Hugging Face folder (or hub id) of the teacher")
    parser.add_argument("out", help="jaxqa checkpoint folder to write")
    parser.add_argument("--layers", help="teacher layers the student keeps, e.g. 0,2,4 (default: every other one)")
    parser.add_argument(
        "--family",
        help="the student's family (default: the teacher's; distilbert from a bert teacher)",
        choices=models.MODEL_TYPES,
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    try:
        teacher = open_checkpoint(args.teacher)
        try:
            layers = (
                [int(x) for x in args.layers.split(",")]
                if args.layers
                else student.every_other(teacher.config.num_hidden_layers)
            )
        except ValueError:
            raise student.StudentError(f"--layers {args.layers}: expected comma-separated layer numbers") from None
        family = args.family or teacher.model_type
        config, params, notes = student.make_student(
            teacher.model_type, teacher.config, teacher.read_params(), layers, family
        )
        save_pretrained(args.out, family, config, params, teacher.folder, args.overwrite, source=teacher.folder)
    except Error as err:
        print(f"make_student: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: a {family} student of {len(layers)} layers, the teacher's {','.join(map(str, layers))}")
    for note in notes:
        print(f"approximate: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
