"""``python -m services.mllp``: listen on MLLP_HOST:MLLP_PORT until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging

from services.mllp.server import run
from shared.config import load_settings

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(load_settings()))
