"""`python -m mathcoach`: serve on $HOST:$PORT (defaults 0.0.0.0:8080), as Cloud Run expects."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

from mathcoach import logs
from mathcoach.settings import ConfigError, Settings


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def main() -> int:
    try:
        settings = Settings.from_env(os.environ)
        if settings.provider == "gemini" and not _importable("google.genai"):
            raise ConfigError(
                "AI_PROVIDER=gemini needs the google-genai package: pip install google-genai"
            )
    except ConfigError as exc:
        logs.setup()
        logs.event("config_error", logging.ERROR, error=str(exc))
        return 2
    log_config = logs.setup(settings.secrets)

    import uvicorn  # after logging is set up, so its first lines are JSON too

    from mathcoach.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=log_config,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
