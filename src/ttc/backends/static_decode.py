"""Old import path of `ttc.backends.transformers.static_decode` (moved, issue 21).

The module object itself is the moved one, so every name, private ones included, resolves as before.
"""

import sys

from ttc.backends.transformers import static_decode as _moved

sys.modules[__name__] = _moved
