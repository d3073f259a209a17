"""JAX's persistent compilation cache: a new process reads the programs an
earlier one compiled instead of compiling them again (seconds per model shape).

The command-line tools turn it on (their `--compilation-cache` flag); library
users call `enable()` once, before the first model call.
"""

import os
from pathlib import Path

import jax

HELP = "folder of JAX's persistent compilation cache (empty: $JAXQA_XLA_CACHE, else ~/.cache/jaxqa/xla; none: off)"


def default_folder() -> Path:
    """`$JAXQA_XLA_CACHE`, else ~/.cache/jaxqa/xla."""
    return Path(os.environ.get("JAXQA_XLA_CACHE") or Path.home() / ".cache" / "jaxqa" / "xla")


def enable(folder: str | Path = "") -> Path | None:
    """Turns the cache on for this process and returns its folder: `folder`, or
    default_folder() when empty; "none" leaves it off and returns None.

    Every program is cached, however fast it compiled: JAX's default keeps only
    those that took over a second, which leaves out most inference programs.
    """
    if str(folder).lower() == "none":
        return None
    folder = Path(folder).expanduser() if str(folder) else default_folder()
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder
