"""`python -m conveyor.runtime`: the entrypoint of every step."""

import sys

from conveyor.runtime.step import main

sys.exit(main())
