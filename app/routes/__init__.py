"""The routes, by concern: the correction (``correction``), health and metrics (``health``), the web page and the
API docs (``pages``)."""
