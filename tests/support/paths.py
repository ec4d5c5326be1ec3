"""Where the tests find the checkout, the example ladder, the shipped texts and their model cache."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = REPO_ROOT / "examples" / "gemma-3-270m"
DATA_DIR = REPO_ROOT / "examples" / "data"
# The real model expanded to BF16/F16 once, reused by later sessions.
TEST_CACHE = Path(os.environ.get("HUBBOT_TEST_CACHE", Path.home() / ".cache" / "hubbot-tests"))
