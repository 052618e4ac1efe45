"""``python -m vitbench.analyze RUN_DIR|EXPERIMENT ...`` (the same as ``vitbench analyze``)."""

import sys

from vitbench.analyze.cli import main

sys.exit(main())
