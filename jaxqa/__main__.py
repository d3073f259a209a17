"""`python -m jaxqa`: the `jaxqa` command (`jaxqa.cli`)."""

import sys

from jaxqa.cli import main

sys.exit(main())
