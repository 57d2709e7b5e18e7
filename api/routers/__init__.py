"""The API's routers: thin, they validate, call ``vase`` and shape responses."""
