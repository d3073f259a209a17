"""Makes a student checkpoint from a teacher: the teacher's embeddings, span head
and a chosen subset of its layers, in its family or, from BERT, as DistilBERT.

    python convert/make_student.py TEACHER OUT [--layers 0,2,4] [--family distilbert]

Each note on what is approximate is printed. An installed jaxqa has the same
command as `jaxqa-student`.
"""

import sys

from jaxqa.checkpoint import student_main as main

if __name__ == "__main__":
    sys.exit(main())
