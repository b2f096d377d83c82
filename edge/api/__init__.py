"""The HTTP layer of the edge agent: Litestar app, controllers, auth, schemas, and the one
place where domain errors and values become HTTP responses and SSE events."""
