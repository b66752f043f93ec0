"""`python -m steerfront.cli`."""

import sys

from steerfront.cli import main

sys.exit(main())
