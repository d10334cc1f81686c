"""The bottom layer every package imports: atomic writes (``io``), the config round trip and
value checks (``config``), library versions (``versions``).

``llm_teacher`` and ``student`` import only themselves and this package; ``common`` imports no
project package.
"""
