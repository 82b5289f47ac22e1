"""`python -m conveyor.serving`: the model server's entrypoint."""

import sys

from conveyor.serving.server import main

sys.exit(main())
