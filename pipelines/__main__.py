"""`python -m pipelines` is the `campaign` command."""

import sys

from pipelines.cli import main

sys.exit(main())
