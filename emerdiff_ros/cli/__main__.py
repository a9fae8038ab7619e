"""python -m emerdiff_ros.cli: the emerdiff command."""

import sys

from . import main

sys.exit(main())
