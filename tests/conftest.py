"""Fixtures shared by the test modules."""

import logging
import sys

import pytest
import torch


@pytest.fixture(scope="module")
def restore_process_state():
    """equihash.cli.main() sets torch threads, the equihash logger and sys.excepthook;
    give the pytest process its state back after the module."""
    logger = logging.getLogger("equihash")
    saved = torch.get_num_threads(), list(logger.handlers), logger.level, logger.propagate, sys.excepthook
    yield
    torch.set_num_threads(saved[0])
    logger.handlers[:], logger.level, logger.propagate, sys.excepthook = saved[1:]
