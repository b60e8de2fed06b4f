"""``python -m app``: serve the default (or configured) checkpoint with uvicorn."""
import uvicorn

from app.main import create_app
from app.settings import Settings


def main() -> None:
    settings = Settings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=settings.log_level, timeout_graceful_shutdown=30)


if __name__ == "__main__":
    main()
