"""python -m eqs_reward.cli"""

import sys

from eqs_reward.cli import main

sys.exit(main())
