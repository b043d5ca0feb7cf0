"""`python -m keras_mnas`: the `keras-mnas` command (see `keras_mnas.cli`)."""

import sys

from keras_mnas.cli import main

sys.exit(main())
