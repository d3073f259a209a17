import sys

from jaxqa.export.write import main

sys.exit(main())
