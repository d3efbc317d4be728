"""`python -m vouch …`: the same as the `vouch` command."""

import sys

from vouch.cli import main

sys.exit(main())
