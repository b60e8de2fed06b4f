"""``python -m app``: serve the default (or configured) checkpoint with uvicorn.

On SIGTERM uvicorn stops accepting connections and gives in-flight requests
``WBVAE_SHUTDOWN_GRACE_S`` seconds to finish before the lifespan shuts down.
"""

import math

import uvicorn

from app.logs import configure_logging
from app.main import create_app
from app.memory import retain_freed_memory
from app.settings import Settings


def serve(settings: Settings) -> None:
    """Run the service with ``settings`` until SIGINT/SIGTERM."""
    configure_logging(settings.log_level, settings.log_json)
    if settings.retain_freed_memory:
        retain_freed_memory()  # before any worker thread starts
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
    )


def main() -> None:
    serve(Settings())


if __name__ == "__main__":
    main()
