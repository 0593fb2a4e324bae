"""The HTTP server (aiohttp): `app.make_app` builds it, one module per audience."""
