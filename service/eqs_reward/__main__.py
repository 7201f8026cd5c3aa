"""``python -m eqs_reward``: the ``eqs-reward`` command."""

import sys

from eqs_reward.cli import main

sys.exit(main())
