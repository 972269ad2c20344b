#!/usr/bin/env bash
# LiteLLM's proxy in a virtualenv of its own (its dependencies conflict with ttc's), for the tests
# that put a real gateway in front of the suite's vLLM server (tests/test_gateway_real.py).
# Cached per machine under ~/.cache, keyed by the pin: built once (~3 min), then reused by every
# checkout and CI run. Prints the virtualenv's folder. $TTC_LITELLM_HOME overrides the folder.
set -euo pipefail
pin="${1:-1.108.7}"
root="${TTC_LITELLM_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/ttc-tests/litellm-$pin}"
mkdir -p "$(dirname "$root")"
exec 9>"$root.lock"
flock 9  # one build at a time; a second caller waits, then finds it built
if [ ! -f "$root/.ttc-complete" ]; then
    rm -rf "$root"
    python3 -m venv "$root"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$root/bin/python" -m pip install -q "litellm[proxy]==$pin" >&2
    "$root/bin/python" -c "import litellm.proxy.proxy_server" >&2
    echo "$pin" > "$root/.ttc-complete"
fi
echo "$root"
