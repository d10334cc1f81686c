"""Stage 5, serving: a finished run behind HTTP.

- ``artifacts``: find a run's student, index and dataset (``resolve_run``) and load them once
  into an :class:`Engine` (model, index, ``Retriever``, titles, id maps, fingerprints);
- ``batching``: the micro-batcher that joins concurrent requests into one tower call and one
  search;
- ``app``: ``create_app(config)``, the FastAPI application; its parts: ``routes/`` (one
  ``APIRouter`` per concern: recommend, items, health, admin), ``schemas`` (request bodies),
  ``answers`` (bodies -> queries -> JSON), ``errors`` (the error body and its handlers),
  ``state`` (engine, batcher, metrics, reload: the ``State`` dependency), ``middleware``
  (body limit, request metrics);
- ``serve``: the ``recdistill serve`` job (uvicorn).

Reads what compression (and training) wrote; writes nothing.
"""
