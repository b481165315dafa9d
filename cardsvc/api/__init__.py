"""The edge of the HTTP API, the same for every route of every package (docs/architecture.md,
"The edge of the API"): request limits before parsing (:mod:`cardsvc.api.limits`), the one
error body and its statuses (:mod:`cardsvc.api.errors`), and what the OpenAPI document says of
both (:mod:`cardsvc.api.openapi`)."""
