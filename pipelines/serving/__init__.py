"""Stage 5, serving: a finished run behind HTTP.

- ``artifacts``: find a run's student, index and dataset (``resolve_run``) and load them once
  into an :class:`Engine` (model, index, ``Retriever``, titles, id maps, fingerprints);
- ``batching``: the micro-batcher that joins concurrent requests into one tower call and one
  search;
- ``app``: ``create_app(config)``, the FastAPI application (endpoints, errors, metrics, reload);
- ``serve``: the ``recdistill serve`` job (uvicorn).

Reads what compression (and training) wrote; writes nothing.
"""
