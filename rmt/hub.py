"""Hugging Face hub names without a network: fail at once, not after minutes of retries.

``huggingface_hub`` retries a request that cannot connect five times with backoff (1 + 2 + 4 + 8 +
8 s), once per file it looks for, so on a machine without a network ``rmt eval some/model`` used
to wait 26-53 s before saying the model is unknown. Before a hub name is loaded, ``prepare`` checks
with one short connection attempt whether the hub can be reached; when it cannot, it switches the
HF libraries to offline mode (as ``HF_HUB_OFFLINE=1`` would), so a model in the local cache loads at
once and a missing one fails at once, with the loaders' own one-line errors.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_SECONDS = 3.0
_TRUE = {"1", "on", "yes", "true"}
_reachable: dict[tuple[str, int], bool] = {}


def offline_mode() -> bool:
    """Whether the HF libraries are already offline (then they fail fast by themselves)."""
    if any(os.environ.get(k, "").strip().lower() in _TRUE
           for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")):
        return True
    constants = sys.modules.get("huggingface_hub.constants")
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _target() -> tuple[str, int]:
    """Where a hub request would connect first: the HTTPS proxy when one is set, else the endpoint."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)
    return url.hostname or "", url.port or (443 if url.scheme == "https" else 80)


def hub_reachable(timeout: float = PROBE_SECONDS) -> bool:
    """One TCP connection to the hub (or proxy), name lookup included, within ``timeout`` seconds."""
    target = _target()
    if target not in _reachable:
        result = [False]

        def connect():
            try:
                socket.create_connection(target, timeout=timeout).close()
                result[0] = True
            except OSError:
                pass

        # getaddrinfo has no timeout of its own: a resolver that hangs must not hang us.
        thread = threading.Thread(target=connect, daemon=True)
        thread.start()
        thread.join(timeout)
        _reachable[target] = result[0]
    return _reachable[target]


def go_offline() -> None:
    """Put ``huggingface_hub``, ``transformers`` and ``datasets`` into offline mode, imported or not."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # transformers asks huggingface_hub.is_offline_mode() at call time
    config = sys.modules.get("datasets.config")
    if config is not None:
        config.HF_HUB_OFFLINE = True
        config.HF_DATASETS_OFFLINE = True


def prepare(name: str | os.PathLike | None) -> bool:
    """Call before loading ``name`` (a local path or a hub name). Returns True when the hub was
    found unreachable and the libraries were switched to offline mode."""
    if name is None or Path(name).expanduser().exists() or offline_mode():
        return False
    if hub_reachable():
        return False
    go_offline()
    return True
