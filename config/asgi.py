"""The web server's application: gunicorn with uvicorn workers serves it (`make run`, and
the deployment steps of README.md).

Two handlers, chosen per request by the view its path resolves to:

- an async view (the OpenAI-compatible endpoint, which waits up to
  OPENAI_COMPAT_WAIT_SECONDS for the chain) runs in Django's ASGI handler, on the event
  loop: a waiting call holds no thread of the pool below;
- everything else (the pages, the JSON API, static files) runs as WSGI in a bounded pool
  of WEB_THREADS threads per process, as under gunicorn's threaded worker before. Django's
  ASGI handler would run each such view in a new thread of its own, so persistent
  database connections would never be reused, and it reads a synchronous streaming
  response (a gallery's zip, an image) whole into memory before sending it; the WSGI
  adapter streams it chunk by chunk.
"""

import os

from a2wsgi import WSGIMiddleware
from asgiref.sync import iscoroutinefunction
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application
from django.urls import Resolver404, resolve

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

async_app = get_asgi_application()
sync_app = WSGIMiddleware(get_wsgi_application(), workers=int(os.environ.get("WEB_THREADS", "8")))


def serves_async(scope) -> bool:
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    try:
        return iscoroutinefunction(resolve(path).func)
    except Resolver404:
        return False


async def application(scope, receive, send):
    # Lifespan and anything not HTTP go to the WSGI adapter, which answers them.
    if scope["type"] == "http" and serves_async(scope):
        await async_app(scope, receive, send)
    else:
        await sync_app(scope, receive, send)
