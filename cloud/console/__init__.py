"""The fleet console: a Litestar app with server-rendered pages and a JSON API."""
