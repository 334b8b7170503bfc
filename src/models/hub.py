"""The Hugging Face hub without a network: decide in seconds, not after a minute of retries.

Without a network transformers' `from_pretrained` retries for ~23-46 s and open_clip's hub tags
for ~46 s before failing. `hub_offline()` checks once whether the hub answers (or honours
HF_HUB_OFFLINE=1) and, when it does not, switches the hub client to offline mode, so that a
cached copy still loads and a missing one fails at once.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

HF_HUB = "https://huggingface.co"


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the URL's host and port opens within `timeout` seconds (the one
    network check of the framework: the Hugging Face hub here, the W&B host in experiments.loggers)."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_reachable(timeout: float = 3.0) -> bool:
    return reachable(os.environ.get("HF_ENDPOINT", HF_HUB), timeout)


def hub_offline() -> bool:
    """True (and the hub client set to offline mode) when the hub cannot be reached."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not hub_reachable():
        import huggingface_hub.constants

        os.environ["HF_HUB_OFFLINE"] = "1"
        huggingface_hub.constants.HF_HUB_OFFLINE = True  # read once at import: set it too
        return True
    return False
