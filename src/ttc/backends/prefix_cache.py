"""Old import path of `ttc.backends.transformers.prefix_cache` (moved, issue 21).

The module object itself is the moved one, so every name, private ones included, resolves as before.
"""

import sys

from ttc.backends.transformers import prefix_cache as _moved

sys.modules[__name__] = _moved
