import sys

from jaxqa.serve.command import main

sys.exit(main())
