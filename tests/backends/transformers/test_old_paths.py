"""The transformers backend's modules moved into a package (issue 21); their old import paths still work."""

import importlib


def test_old_module_paths_name_the_moved_modules():
    for name in ("prefix_cache", "static_decode"):
        old = importlib.import_module(f"ttc.backends.{name}")
        new = importlib.import_module(f"ttc.backends.transformers.{name}")
        assert old is new
    from ttc.backends.prefix_cache import PrefixCache, past_cache
    from ttc.backends.static_decode import StaticSession
    from ttc.backends.transformers.prefix_cache import PrefixCache as moved

    assert PrefixCache is moved and callable(past_cache) and StaticSession.__name__ == "StaticSession"
