"""``python -m app``: serve the default (or configured) checkpoint with uvicorn.

The server's limits (request head size, head/body/keep-alive timeouts, connection cap) are set in
``app/server/protocol.py``. On SIGTERM uvicorn stops accepting connections and gives in-flight requests
``WBVAE_SHUTDOWN_GRACE_S`` seconds to finish before the lifespan shuts down.
"""

from app.logs import configure_logging
from app.main import create_app
from app.memory import retain_freed_memory
from app.server import run
from app.settings import Settings


def serve(settings: Settings) -> None:
    """Run the service with ``settings`` until SIGINT/SIGTERM."""
    configure_logging(settings.log_level, settings.log_json)
    if settings.retain_freed_memory:
        retain_freed_memory()  # before any worker thread starts
    run(create_app(settings), settings)


def main() -> None:
    serve(Settings())


if __name__ == "__main__":
    main()
