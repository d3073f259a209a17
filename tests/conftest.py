"""Session-wide test settings."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def compilation_cache_in_tmp(tmp_path_factory):
    """The tools' persistent compilation cache goes to a folder of this session,
    not the user's home; the commands that tests start inherit it."""
    os.environ["JAXQA_XLA_CACHE"] = str(tmp_path_factory.mktemp("xla-cache"))
    yield
    del os.environ["JAXQA_XLA_CACHE"]
